"""Time and memory of TokenBudgetBatchSampler building one epoch's batches, for synthetic corpora of N pairs.

    python benchmarks/sampler_scale.py                   # 1M and 10M pairs, max_tokens 4096
    python benchmarks/sampler_scale.py --sizes 1000000 --max-tokens 2048

Each size runs in its own process, one thread: the lengths (int32, 1..100 tokens, a seeded draw) are made first,
then the sampler is built and `len()` computes the epoch. "peak" is ru_maxrss above the RSS before the build (the
transient cost of building), "kept" the RSS still held afterwards (the epoch's batches), both in MB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(n: int, max_tokens: int) -> dict:
    """One size in this process: build time, transient and kept memory."""
    import numpy as np

    from torchlingo.data_processing import TokenBudgetBatchSampler

    rng = np.random.default_rng(0)
    src, tgt = (rng.integers(1, 101, n, dtype=np.int32) for _ in range(2))
    before = rss_mb()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    sampler = TokenBudgetBatchSampler(src, tgt, max_tokens, seed=1)
    batches = len(sampler)
    seconds = time.perf_counter() - start
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, peak_before)
    return {
        "pairs": n,
        "batches": batches,
        "seconds": round(seconds, 2),
        "peak_mb": round(peak - before),
        "kept_mb": round(rss_mb() - before),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process: measure this size
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.max_tokens)))
        return
    for n in map(int, args.sizes.split(",")):
        cmd = [sys.executable, __file__, "--one", str(n), "--max-tokens", str(args.max_tokens)]
        print(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
