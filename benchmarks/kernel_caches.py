"""bf16 training's memory and speed with oneDNN's kernel caches bounded (what `torchlingo train` does) against their
defaults (1,024 kernels each), in the same run: `torchlingo train configs/multi30k_de_en.yaml` for a few hundred
steps, each run in its own process, the two settings alternating, best speed of the repeats.

    python benchmarks/kernel_caches.py                       # ../shared/data/multi30k, 300 steps, 2 rounds
    python benchmarks/kernel_caches.py --steps 100 --repeats 1 --threads 1
    python benchmarks/kernel_caches.py --quick               # smoke run: configs/base.yaml on data/, 4 steps

Peak RSS is the process's ru_maxrss (os.wait4); speed is the run's own "training: ... target tokens/s" line.
Without native bf16 (amp: auto is fp32) the caches are not used and both rows agree.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_CANDIDATES = [base / "shared" / "data" / "multi30k" for base in (REPO.parent, REPO.parent.parent)]
DEFAULT_DATA = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0])
CACHES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")
SETTINGS = {"bounded (64, the command's)": None, "default (1024)": "1024"}


def train(data: Path | None, out: Path, name: str, steps: int, threads: int, entries: str | None) -> dict:
    """One short training run; (target tok/s, peak RSS MiB). `entries` None: the command's own bound; `data` None:
    configs/base.yaml on its own corpus."""
    env = {k: v for k, v in os.environ.items() if k not in CACHES}
    if entries is not None:
        env.update(dict.fromkeys(CACHES, entries))  # set beforehand, so the command leaves them alone
    keys = dict(
        test_file="null", num_threads=threads, max_steps=steps, warmup_steps=min(100, steps // 4),
        log_interval=steps, checkpoint_interval=0, average_last=0, tensorboard_dir=out, experiment_name=name,
        use_tensorboard="false", **({"train_file": data / "train", "val_file": data / "val"} if data else {}),
    )  # fmt: skip
    config = REPO / "configs" / ("multi30k_de_en.yaml" if data else "base.yaml")
    argv = [sys.executable, "-m", "torchlingo", "train", str(config)]
    for key, value in keys.items():
        argv += ["--set", f"{key}={value}"]
    proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    found = re.search(r"training: [\d.]+ s, ([\d,]+) target tokens/s", output)
    if status != 0 or not found:
        raise SystemExit(f"{name}: the run failed:\n{output[-2000:]}")
    return {"tok_s": int(found.group(1).replace(",", "")), "rss_mib": usage.ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with train.de/en and val.de/en")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="rounds of both settings, alternating")
    p.add_argument("--quick", action="store_true", help="configs/base.yaml on data/, 4 steps, one round")
    args = p.parse_args(argv)
    if args.quick:
        args.data, args.steps, args.repeats, args.threads = None, 4, 1, 1
    best: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeats):
            for i, (label, entries) in enumerate(SETTINGS.items()):
                r = train(args.data, Path(tmp), f"r{round_}_{i}", args.steps, args.threads, entries)
                print(f"  {label}: {r['tok_s']} target tok/s, peak RSS {r['rss_mib']:.0f} MiB", file=sys.stderr)
                if label not in best or r["tok_s"] > best[label]["tok_s"]:
                    best[label] = {**r, "rss_mib": max(r["rss_mib"], best.get(label, {}).get("rss_mib", 0))}
    ref = best["default (1024)"]["tok_s"]
    recipe = "configs/base.yaml" if args.quick else "configs/multi30k_de_en.yaml"
    print(f"\n{args.steps} steps of {recipe}, {args.threads} threads, best of {args.repeats}:\n")
    print("| kernel caches | target tok/s | vs default | peak RSS MiB |\n|---|---|---|---|")
    for label, r in best.items():
        print(f"| {label} | {r['tok_s']} | {r['tok_s'] / ref:.2f}x | {r['rss_mib']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
