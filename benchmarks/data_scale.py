"""How the data path scales: Multi30k repeated x1, x10, x40, prepared into shards and trained from them, against the
in-memory path. One table: prepare time with 1 and 2 workers, start-up (everything before the first step), peak RSS
and time per step of a short training run, from shards and in memory.

    python benchmarks/data_scale.py                      # ../shared/data/multi30k, x1 x10 x40, 100 steps
    python benchmarks/data_scale.py --scales 1,10 --steps 50
    python benchmarks/data_scale.py --quick              # smoke run: data/train.tsv, x1, 3 steps, a tiny model

Every measurement runs in its own process (peak RSS is resource.getrusage's ru_maxrss of that process), one thread.
The corpora and runs go to a temporary directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# ../shared/data/multi30k beside the checkout (or beside the directory of worktrees holding it)
_CANDIDATES = [base / "shared" / "data" / "multi30k" for base in (REPO.parent, REPO.parent.parent)]
DEFAULT_DATA = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0])
TINY = {"tokenizer": "word", "d_model": 16, "n_heads": 2, "num_encoder_layers": 1, "num_decoder_layers": 1, "d_ff": 32}


def build_corpus(source: Path, scale: int, dest: Path) -> str:
    """dest/train.{de,en} (or dest/train.tsv): the source corpus repeated `scale` times, streamed; returns the
    train_file spec."""
    dest.mkdir(parents=True, exist_ok=True)
    pairs = [(source, dest / "train.tsv")] if source.suffix == ".tsv" else []
    if not pairs:
        pairs = [(source / f"train.{lang}", dest / f"train.{lang}") for lang in ("de", "en")]
    for src, out in pairs:
        data = src.read_bytes()
        if data and not data.endswith(b"\n"):
            data += b"\n"
        if src.suffix == ".tsv":  # the header once, not once per copy
            header, _, body = data.partition(b"\n")
            data, first = body, header + b"\n"
        else:
            first = b""
        with open(out, "wb") as f:
            f.write(first)
            for _ in range(scale):
                f.write(data)
    return str(dest / "train.tsv") if source.suffix == ".tsv" else str(dest / "train")


def make_config(args: dict):
    from torchlingo.config import Config

    langs = {} if args["train_file"].endswith(".tsv") else {"src_lang": "de", "tgt_lang": "en"}
    model = TINY if args["quick"] else {"vocab_size": 8000}
    return Config(
        train_file=args["train_file"],
        **langs,
        **model,
        prepared_data=args["mode"],
        data_dir=args["data_dir"],
        max_tokens=args["max_tokens"],
        max_steps=args["steps"],
        num_epochs=1000,
        save_checkpoints=False,
        use_tensorboard=False,
        progress_bar=False,
        device="cpu",
        amp="none",
        num_threads=1,
        tensorboard_dir=args["runs"],
        experiment_name=args["name"],
        bad_lines="skip",
    )


def child(args: dict) -> dict:
    """One measurement in this process: prepare (with `workers`) or a training run (from shards or in memory)."""
    start = time.perf_counter()
    config = make_config(args)
    if args["task"] == "prepare":
        from torchlingo.data_processing.prepare import prepare_shards

        manifest = prepare_shards(config, workers=args["workers"])
        out = {"seconds": time.perf_counter() - start, "pairs": manifest["pairs"], "phases": manifest["seconds"]}
    else:
        from torchlingo.experiment import run_experiment

        metrics = run_experiment(config)
        wall = time.perf_counter() - start
        out = {
            "startup": wall - metrics["train_time_s"],
            "step_ms": 1000 * metrics["train_time_s"] / max(1, metrics["steps"]),
            "steps": metrics["steps"],
        }
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def measure(args: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(args)], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"measurement {args['task']} {args['mode']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_scale(source: Path, scale: int, tmp: Path, opts: argparse.Namespace) -> dict:
    train_file = build_corpus(source, scale, tmp / f"x{scale}")
    base = {"train_file": train_file, "quick": opts.quick, "steps": opts.steps, "max_tokens": opts.max_tokens}
    base["runs"] = str(tmp / "runs")
    row = {"scale": scale}
    for workers in (1, 2):
        data_dir = str(tmp / f"shards_x{scale}_w{workers}")
        prep = measure(
            {**base, "task": "prepare", "mode": "auto", "data_dir": data_dir, "workers": workers, "name": "p"}
        )
        row["pairs"], row[f"prepare_w{workers}"] = prep["pairs"], prep["seconds"]
        row[f"phases_w{workers}"] = prep["phases"]
    for mode in ("auto", "off"):
        name = f"x{scale}_{mode}"
        run = measure({**base, "task": "train", "mode": mode, "data_dir": data_dir, "workers": 1, "name": name})
        row.update({f"{k}_{mode}": v for k, v in run.items() if k != "steps"})
    return row


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'corpus':>7} {'pairs':>9} {'prep 1w s':>9} {'prep 2w s':>9} | {'start s':>8} {'peak MB':>8} {'ms/step':>8}"
        f" (shards) | {'start s':>8} {'peak MB':>8} {'ms/step':>8} (in memory)"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{'x' + str(r['scale']):>7} {r['pairs']:>9} {r['prepare_w1']:>9.1f} {r['prepare_w2']:>9.1f} | "
            f"{r['startup_auto']:>8.1f} {r['peak_rss_mb_auto']:>8.0f} {r['step_ms_auto']:>8.1f}          | "
            f"{r['startup_off']:>8.1f} {r['peak_rss_mb_off']:>8.0f} {r['step_ms_off']:>8.1f}"
        )
    print("prepare's phases, seconds (the rest of 'prep': starting Python and importing torch):")
    for r in rows:
        for w in (1, 2):
            phases = ", ".join(f"{k} {v:.1f}" for k, v in r[f"phases_w{w}"].items())
            print(f"{'x' + str(r['scale']):>7} {w} worker{'s' if w > 1 else ''}: {phases}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Multi30k raw text directory (train.de, train.en)")
    p.add_argument("--scales", default="1,10,40", help="copies of the corpus, comma-separated")
    p.add_argument("--steps", type=int, default=100, help="training steps of each run")
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--quick", action="store_true", help="smoke run: data/train.tsv, x1, 3 steps, a tiny model")
    p.add_argument("--child", help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    if opts.child:
        print(json.dumps(child(json.loads(opts.child))))
        return 0
    if opts.quick:
        opts.data, opts.scales, opts.steps, opts.max_tokens = REPO / "data" / "train.tsv", "1", 3, 256
    with tempfile.TemporaryDirectory(prefix="data_scale.") as tmp:
        rows = [run_scale(opts.data, int(s), Path(tmp), opts) for s in opts.scales.split(",")]
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
