"""Data-parallel scaling on one machine's CPU cores: 1 process x N threads against N processes x 1 thread (gloo).

    PYTHONPATH=. python benchmarks/ddp_scaling.py [--data DIR] [--procs 2] [--steps N] [--max-tokens B] [--quick]

Both rows train through `train_model` with the same global batch: the reference is one process with max_tokens
N x B on N threads; the DDP row is N ranks launched by torchrun (`python -m torch.distributed.run`, gloo), each with
max_tokens B on one thread, so an optimizer step sees about N x B tokens in both and the same cores do the work.
Each row runs in fresh processes; the clock starts when the batch after the warm-up steps is drawn and stops when
train_model returns (rank 0's clock for DDP: the ranks move in step). Target tokens are those of the timed batches,
summed over the ranks. Scaling efficiency = DDP tokens/s / reference tokens/s: 100% means data parallelism costs
nothing over threads on the same cores; the gap is the gradient all-reduce and the per-step agreements.

Data: Multi30k de-en with the 8k joint SentencePiece model and the 3+3-layer d256 model of train_speed.py
(`--data`, default ../shared/data/multi30k); `--quick` uses a generated toy corpus, a tiny model and a few steps
(the smoke test in tests/test_ddp_scaling_script.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runs from a checkout without installing
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "multi30k"
TINY = dict(tokenizer="word", d_model=32, n_heads=2, num_encoder_layers=1, num_decoder_layers=1, d_ff=64)


# ----------------------------------------------------------------------------------------------- one row
def toy_corpus(folder: Path, n: int = 2000) -> Path:
    """A word-for-word toy corpus (as in tests/conftest.py), for --quick."""
    words = "the a cat dog sees likes house red big small runs and".split()
    rng = random.Random(0)
    lines = []
    for _ in range(n):
        s = [rng.choice(words) for _ in range(rng.randint(3, 12))]
        lines.append(" ".join(s) + "\t" + " ".join(w.upper() for w in s))
    path = folder / "toy.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def load(spec: dict):
    """(config, dataset) of the row: Multi30k as train_speed.py builds it, or the toy corpus."""
    from torchlingo.config import Config
    from torchlingo.data_processing import NMTDataset, SentencePieceVocab

    common = dict(max_tokens=spec["max_tokens"], num_threads=spec["threads"], amp=spec["amp"], seed=1)
    if spec["quick"]:
        config = Config(**TINY, **common)
        return config, NMTDataset(spec["data"], config=config)
    sys.path.insert(0, str(Path(__file__).parent))
    from train_speed import MODEL

    config = Config(src_lang="de", tgt_lang="en", **MODEL, **common)
    vocab = SentencePieceVocab.load(spec["spm"])
    return config, NMTDataset(Path(spec["data"]) / "train", vocab, vocab, config, max_len=config.max_len)


def worker(spec: dict) -> dict:
    """One process of a row (under torchrun: one rank): seconds of the timed steps and their target tokens."""
    import torch
    from train_speed import Timed  # the loader that starts the clock after the warm-up batches

    from torchlingo import distributed
    from torchlingo.data_processing import make_loader
    from torchlingo.models import SimpleTransformer
    from torchlingo.training import train_model

    torch.set_num_threads(spec["threads"])
    config, dataset = load(spec)
    steps, warmup = spec["steps"], spec["warmup"]
    config = config.replace(
        max_steps=warmup + steps,
        num_epochs=1,
        log_interval=10**9,
        use_tensorboard=False,
        progress_bar=False,
        save_checkpoints=False,
        tensorboard_dir=tempfile.mkdtemp(prefix="torchlingo-ddp-bench-"),
    )
    torch.manual_seed(config.seed)
    model = SimpleTransformer(len(dataset.src_vocab), len(dataset.tgt_vocab), config)
    loader = Timed(make_loader(dataset, config, shuffle=True), warmup)
    if len(loader) < warmup + steps:
        raise SystemExit(f"only {len(loader)} batches a rank; lower --steps or --max-tokens")
    train_model(model, loader, None, config)
    seconds = time.perf_counter() - loader.start
    timed = loader.batch_sampler.batches()[warmup : warmup + steps]
    tokens = sum(int(dataset.tgt_lengths[i]) + 1 for b in timed for i in b)  # predicted: words + </s>
    return {"rank": distributed.rank(), "seconds": seconds, "tokens": tokens}


def run_row(spec: dict, procs: int) -> dict:
    """Launch one row: `procs` == 1 a plain process, else torchrun with `procs` ranks. Returns tokens/s over all."""
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(spec["threads"]),
        MKL_NUM_THREADS=str(spec["threads"]),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    launcher = [sys.executable]
    if procs > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    cmd = [*launcher, __file__, "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=spec["timeout"])
    if proc.returncode != 0:
        sys.exit(f"{procs} process(es) failed:\n{proc.stderr[-3000:]}")
    ranks = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert sorted(r["rank"] for r in ranks) == list(range(procs)), proc.stdout
    seconds = next(r["seconds"] for r in ranks if r["rank"] == 0)
    tokens = sum(r["tokens"] for r in ranks)
    return {"seconds": seconds, "tokens": tokens, "tok_s": tokens / seconds}


# ----------------------------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with train.de / train.en")
    p.add_argument("--procs", type=int, default=2, help="ranks of the DDP row = threads of the reference")
    p.add_argument("--steps", type=int, default=30, help="timed optimizer steps per row")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--max-tokens", type=int, default=1000, help="token budget B of one rank (the reference: N x B)")
    p.add_argument("--amp", default="auto", help="precision of both rows (auto: bf16 where the CPU runs it fast)")
    p.add_argument("--repeats", type=int, default=1, help="run both rows this many times (alternating), keep the best")
    p.add_argument("--quick", action="store_true", help="toy corpus, tiny model, 4 steps: a smoke test")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        # one write of the whole line: the ranks share one pipe, and print's separate newline write can interleave
        os.write(1, ("RESULT " + json.dumps(worker(json.loads(args.worker))) + "\n").encode())
        return
    began, n = time.perf_counter(), args.procs
    spec = dict(quick=args.quick, amp=args.amp, steps=args.steps, warmup=args.warmup, timeout=1800, spm=None)
    if args.quick:
        spec.update(steps=4, warmup=1, amp="none", timeout=300)
        args.max_tokens = min(args.max_tokens, 200)
        spec["data"] = str(toy_corpus(Path(tempfile.mkdtemp(prefix="torchlingo-ddp-bench-"))))
        setting = f"toy corpus, 1+1 layers d{TINY['d_model']}"
    else:
        if not (args.data / "train.de").is_file():
            sys.exit(f"{args.data}: no train.de / train.en here; pass --data (or --quick)")
        sys.path.insert(0, str(Path(__file__).parent))
        from train_speed import sp_model_path

        spec.update(data=str(args.data), spm=str(sp_model_path(args.data)))
        setting = "Multi30k de-en, 8k joint SentencePiece, 3+3 layers d256 h4 ff1024"
    rows = {
        "reference": (1, dict(spec, threads=n, max_tokens=n * args.max_tokens)),
        "ddp": (n, dict(spec, threads=1, max_tokens=args.max_tokens)),
    }
    best: dict = {}
    for _ in range(args.repeats):
        for name, (procs, row_spec) in rows.items():
            r = run_row(row_spec, procs)
            print(f"  {name}: {r['tok_s']:.0f} target tok/s", file=sys.stderr)
            if name not in best or r["tok_s"] > best[name]["tok_s"]:
                best[name] = r
    ref = best["reference"]["tok_s"]
    print(
        f"\n{setting}; global batch {n} x {args.max_tokens} tokens; amp {spec['amp']}; {spec['steps']} timed steps "
        f"after {spec['warmup']} warm-up; best of {args.repeats}.\n"
    )
    print("| run | processes x threads | max_tokens per process | target tok/s | s/step | scaling efficiency |")
    print("|---|---|---|---|---|---|")
    for name, (procs, row_spec) in rows.items():
        r = best[name]
        label = "1 process (reference)" if name == "reference" else f"DDP, gloo, {procs} ranks"
        print(
            f"| {label} | {procs} x {row_spec['threads']} | {row_spec['max_tokens']} | {r['tok_s']:.0f} | "
            f"{r['seconds'] / spec['steps']:.3f} | {r['tok_s'] / ref:.0%} |"
        )
    print(f"\n({time.perf_counter() - began:.0f} s in all)")


if __name__ == "__main__":
    main()
