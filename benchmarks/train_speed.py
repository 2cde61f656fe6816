"""Training speed: torchlingo's training path against a plain-PyTorch `nn.Transformer` loop, in the same run.

    PYTHONPATH=. python benchmarks/train_speed.py [--data DIR] [--steps N] [--threads 2] [--quick]

Setting (issue 5): Multi30k de->en, 8k joint SentencePiece vocabulary, 3+3 layers, d_model 256, 4 heads, d_ff 1024,
token-budget batches of ~2,000 target tokens, fp32 and bf16 autocast. Both loops see the same batches in the same
order (torchlingo's sampler and collate_fn, epoch 0). torchlingo runs through `train_model` itself (sequence_loss,
fused AdamW, cosine schedule, clipping); the reference is `nn.Transformer` + CrossEntropyLoss(ignore_index=pad,
label_smoothing=0.1) + Adam. Each row runs in its own process so that its peak RSS is its own. The clock starts
when the first batch after warm-up is drawn and stops when the loop returns.
MFU = model FLOPs (3x the forward matmul + attention FLOPs over real tokens) / time / matmul peak measured here (the
best of one measurement before each repeat: the host drifts).

--fairseq-train PATH adds fairseq (the toolkit comparison; it needs its own environment: `pip install fairseq-fixed`
in another venv, PATH its `fairseq-train`): the same corpus encoded with the same SentencePiece model, binarized once
with the `fairseq-preprocess` beside PATH, the same model (pre-norm `transformer`, 3+3 x 256, 4 heads, ffn 1024,
dropout 0.1, shared decoder embeddings, label-smoothed cross-entropy 0.1, Adam), fp32 on CPU. fairseq batches by its
own rule (padded max(source, target) length x sentences <= --max-tokens); --fairseq-max-tokens (default 2,400) gives
about the same mean target tokens per batch as ours. Its speed is its own log's: target tokens / seconds over the
10-update intervals after the first (warm-up).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runs from a checkout without installing
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "multi30k"  # the team's copy beside the repository
MODEL = dict(d_model=256, n_heads=4, num_encoder_layers=3, num_decoder_layers=3, d_ff=1024, dropout=0.1)


# ----------------------------------------------------------------------------------------------- shared setup
def sp_model_path(data: Path) -> Path:
    """The 8k joint SentencePiece model of this corpus, trained once and cached by the corpus' size and mtime."""
    from torchlingo.data_processing import SentencePieceVocab
    from torchlingo.data_processing.dataset import _LineChecker, read_parallel

    files = [data / "train.de", data / "train.en"]
    key = hashlib.sha1(
        repr([(str(f.resolve()), f.stat().st_size, f.stat().st_mtime) for f in files]).encode()
    ).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / "torchlingo-bench" / f"spm8k-{key}.model"
    if not path.exists():
        pairs, _ = read_parallel(*files, _LineChecker("error"))
        path.parent.mkdir(parents=True, exist_ok=True)
        SentencePieceVocab.train(pairs.src + pairs.tgt, 8000).save(path)
    return path


def load(data: Path, spm: Path, max_tokens: int):
    """(config, dataset, loader) exactly as `torchlingo train` builds them."""
    from torchlingo.config import Config
    from torchlingo.data_processing import NMTDataset, SentencePieceVocab, make_loader

    config = Config(src_lang="de", tgt_lang="en", max_tokens=max_tokens, **MODEL)
    vocab = SentencePieceVocab.load(spm)
    dataset = NMTDataset(data / "train", vocab, vocab, config, max_len=config.max_len)
    return config, dataset, make_loader(dataset, config, shuffle=True)


def batch_stats(dataset, batches) -> dict:
    """Target tokens predicted (sentence + EOS), padded target positions, and model FLOPs of these batches."""
    d, f, L, V = MODEL["d_model"], MODEL["d_ff"], MODEL["num_encoder_layers"], 8000
    tokens = positions = flops = 0
    for b in batches:
        s = [int(dataset.src_lengths[i]) + 2 for i in b]
        t = [int(dataset.tgt_lengths[i]) + 1 for i in b]  # decoder input <s> y (= predicted y </s>)
        tokens, positions = tokens + sum(t), positions + len(b) * max(t)
        ns, nt = sum(s), sum(t)
        fwd = 2 * ns * L * (4 * d * d + 2 * d * f)  # encoder linears
        fwd += 2 * nt * L * (4 * d * d + 2 * d * d + 2 * d * f)  # decoder self + cross q/out + ffn
        fwd += 2 * ns * L * 2 * d * d  # cross-attention k, v of the memory
        fwd += 2 * nt * d * V  # output projection
        fwd += sum(4 * d * (si * si + ti * ti / 2 + ti * si) for si, ti in zip(s, t)) * L  # attention scores + sums
        flops += 3 * fwd
    return {"tokens": tokens, "positions": positions, "flops": flops}


def pick_max_tokens(dataset, config, target: float) -> int:
    """The smallest budget whose batches hold `target` predicted target tokens on average."""
    from torchlingo.data_processing import TokenBudgetBatchSampler

    def mean_tokens(budget: int) -> float:
        batches = TokenBudgetBatchSampler(dataset.src_lengths, dataset.tgt_lengths, budget, seed=config.seed).batches()
        return sum(int(dataset.tgt_lengths[i]) + 1 for b in batches for i in b) / len(batches)

    lo, hi = int(target), int(target * 2)
    while hi - lo > 16:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if mean_tokens(mid) < target else (lo, mid)
    return hi


def matmul_peak(dtype_name: str, threads: int) -> float:
    """Best-of GFLOP/s of a (2048 x 1024) @ (1024 x 1024) F.linear in this dtype on `threads` threads."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    dtype = getattr(torch, dtype_name)
    m = 2048 if dtype is torch.float32 else 256  # emulated bf16 is slow: keep it short
    x, w = torch.randn(m, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
    F.linear(x, w)
    best = math.inf
    for _ in range(5 if dtype is torch.float32 else 2):
        t = time.perf_counter()
        F.linear(x, w)
        best = min(best, time.perf_counter() - t)
    return 2 * m * 1024 * 1024 / best / 1e9


def update_peaks(peaks: dict, threads: int) -> None:
    """Measure both peaks again and keep the higher: once per repeat, so a slow minute does not set the MFU scale."""
    for amp, dtype_name in (("fp32", "float32"), ("bf16", "bfloat16")):
        peaks[amp] = max(peaks.get(amp, 0.0), matmul_peak(dtype_name, threads))


# ----------------------------------------------------------------------------------------------- the two loops
def run_torchlingo(
    config, loader, warmup: int, steps: int, amp: str, compile_: bool, activation_dropout: float
) -> float:
    """train_model for warmup + steps optimizer steps; returns the seconds of the last `steps`."""
    from torchlingo.models import SimpleTransformer
    from torchlingo.training import train_model

    run_dir = tempfile.mkdtemp(prefix="torchlingo-bench-")
    config = config.replace(
        amp="none" if amp == "fp32" else amp,
        compile=compile_,
        activation_dropout=activation_dropout,
        max_steps=warmup + steps,
        num_epochs=1,
        log_interval=10**9,
        use_tensorboard=False,
        progress_bar=False,
        save_checkpoints=False,
        tensorboard_dir=run_dir,
    )
    vocab = len(loader.dataset.tgt_vocab)
    model = SimpleTransformer(vocab, vocab, config)
    timed = Timed(loader, warmup)
    train_model(model, timed, None, config)
    return time.perf_counter() - timed.start


def reference_model(vocab: int, pad: int):
    """nn.Transformer with the benchmark's shape, sinusoidal positions and a tied output projection."""
    import torch.nn as nn

    from torchlingo.models.transformer import sinusoidal_positions

    d = MODEL["d_model"]

    class Reference(nn.Module):
        def __init__(self):
            super().__init__()
            self.src_embed = nn.Embedding(vocab, d, padding_idx=pad)
            self.tgt_embed = nn.Embedding(vocab, d, padding_idx=pad)
            self.register_buffer("pe", sinusoidal_positions(1024, d))
            layers = (MODEL[k] for k in ("n_heads", "num_encoder_layers", "num_decoder_layers", "d_ff", "dropout"))
            self.transformer = nn.Transformer(d, *layers, batch_first=True)
            self.out = nn.Linear(d, vocab, bias=False)
            self.out.weight = self.tgt_embed.weight

        def forward(self, src, tgt):
            src_pad, tgt_pad = src == pad, tgt == pad
            causal = nn.Transformer.generate_square_subsequent_mask(tgt.size(1))
            x = self.src_embed(src) * math.sqrt(d) + self.pe[: src.size(1)]
            y = self.tgt_embed(tgt) * math.sqrt(d) + self.pe[: tgt.size(1)]
            masks = dict(src_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad)
            return self.out(self.transformer(x, y, tgt_mask=causal, tgt_is_causal=True, **masks))

    return Reference()


def run_reference(config, loader, warmup: int, steps: int, amp: str) -> float:
    """The plain loop: nn.Transformer, CrossEntropyLoss(ignore_index, label_smoothing), Adam."""
    import torch
    import torch.nn as nn

    torch.manual_seed(config.seed)
    vocab, pad = len(loader.dataset.tgt_vocab), config.pad_idx
    model = reference_model(vocab, pad)
    criterion = nn.CrossEntropyLoss(ignore_index=pad, label_smoothing=0.1)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4, betas=(0.9, 0.98), eps=1e-9)
    model.train()
    timed = Timed(loader, warmup)
    for i, (src, tgt) in enumerate(timed):
        if i == warmup + steps:
            break
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
            logits = model(src, tgt[:, :-1])
            loss = criterion(logits.reshape(-1, vocab).float(), tgt[:, 1:].reshape(-1))
        loss.backward()
        optimizer.step()
    loss.item()
    return time.perf_counter() - timed.start


class Timed:
    """A loader that notes the time when batch `warmup` is drawn (what train_model needs of a loader passes through)."""

    def __init__(self, loader, warmup: int):
        self.loader, self.warmup, self.start = loader, warmup, None
        self.batch_sampler, self.dataset = loader.batch_sampler, loader.dataset

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i == self.warmup:
                self.start = time.perf_counter()
            yield batch


def worker(spec: dict) -> dict:
    """One row, in its own process: returns seconds for the timed steps and the peak RSS."""
    import torch

    torch.set_num_threads(spec["threads"])
    config, dataset, loader = load(Path(spec["data"]), Path(spec["spm"]), spec["max_tokens"])
    config = config.replace(num_threads=spec["threads"])
    if spec["impl"] == "reference":
        seconds = run_reference(config, loader, spec["warmup"], spec["steps"], spec["amp"])
    else:
        from torchlingo.fastpath import bound_kernel_caches, reuse_freed_memory

        reuse_freed_memory()  # as the torchlingo command does
        bound_kernel_caches()
        seconds = run_torchlingo(
            config, loader, spec["warmup"], spec["steps"], spec["amp"], spec["compile"], spec["activation_dropout"]
        )
    return {"seconds": seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_row(spec: dict) -> dict:
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(spec["threads"]),
        MKL_NUM_THREADS=str(spec["threads"]),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.exit(f"{spec['impl']} {spec['amp']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------- fairseq
FAIRSEQ_ARGS = (
    "--arch transformer --encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256 "
    "--encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4 --decoder-attention-heads 4 "
    "--encoder-normalize-before --decoder-normalize-before --share-decoder-input-output-embed --dropout 0.1 "
    "--criterion label_smoothed_cross_entropy --label-smoothing 0.1 --optimizer adam --adam-betas (0.9,0.98) --lr 5e-4 "
    "--lr-scheduler inverse_sqrt --warmup-updates 4000 --cpu --log-format json --log-interval 10 --no-save "
    "--disable-validation --num-workers 0 --seed 1"
).split()


def fairseq_data(data: Path, spm: Path, fairseq_train: Path) -> Path:
    """The corpus encoded with our SentencePiece model and binarized by fairseq-preprocess, made once and cached."""
    import sentencepiece

    out = spm.parent / f"fairseq-{spm.stem}"
    if (out / "bin" / "dict.en.txt").exists():
        return out / "bin"
    out.mkdir(parents=True, exist_ok=True)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(spm))
    for lang in ("de", "en"):
        lines = (data / f"train.{lang}").read_text(encoding="utf-8").splitlines()
        (out / f"train.{lang}").write_text("".join(" ".join(sp.encode(x.strip(), out_type=str)) + "\n" for x in lines))
    cmd = [str(fairseq_train.parent / "fairseq-preprocess"), "--source-lang", "de", "--target-lang", "en"]
    cmd += ["--trainpref", str(out / "train"), "--destdir", str(out / "bin"), "--joined-dictionary"]
    subprocess.run(cmd, check=True, capture_output=True)
    return out / "bin"


def run_fairseq(fairseq_train: Path, binarized: Path, steps: int, threads: int, max_tokens: int) -> dict:
    """fairseq-train for 10 + `steps` updates (rounded up to tens) in its own process: tok/s from its log, peak RSS."""
    updates = 10 + 10 * math.ceil(steps / 10)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [str(fairseq_train), str(binarized), *FAIRSEQ_ARGS, "--max-tokens", str(max_tokens)]
    with tempfile.TemporaryDirectory(prefix="fairseq-bench-") as save_dir:
        cmd += ["--max-update", str(updates), "--save-dir", save_dir]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        log = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"fairseq-train failed:\n{log[-3000:]}")
    return {**fairseq_speed(log), "peak_rss_mib": usage.ru_maxrss / 1024}


def fairseq_speed(log: str) -> dict:
    """Target tok/s over fairseq's 10-update `train_inner` log records after the first (which holds the start-up):
    each record gives words per batch (wpb) and words per second (wps), so its seconds are 10 * wpb / wps."""
    marker = "| train_inner | "
    timed = [json.loads(line.split(marker, 1)[1]) for line in log.splitlines() if marker in line][1:]
    if not timed:
        raise ValueError("fairseq's log has fewer than two train_inner records")
    words = [float(r["wpb"]) * 10 for r in timed]
    seconds = sum(w / float(r["wps"]) for w, r in zip(words, timed))
    return {
        "tok_s": sum(words) / seconds,
        "seconds": seconds,
        "steps": 10 * len(timed),
        "wpb": sum(words) / len(words) / 10,
    }


# ----------------------------------------------------------------------------------------------- the table
def keep_best(results: dict, key: tuple, r: dict) -> None:
    if key not in results or r["tok_s"] > results[key]["tok_s"]:
        results[key] = r


def print_table(results: dict, peaks: dict) -> None:
    """One markdown row per loop: speed, memory, MFU, and the ratios to the reference (and to fairseq, if timed)."""
    fp32_ref, fairseq = results.get(("reference", "fp32", False, 0.0)), results.get(("fairseq", "fp32", False, 0.0))
    head = "| loop | precision | steps | target tok/s | s/step | padding | peak RSS MiB | MFU | vs reference "
    head += "| vs fp32 reference |" + (" vs fairseq fp32 |" if fairseq else "")
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for (impl, amp, comp, act), r in results.items():
        ref = results.get(("reference", amp, False, 0.0))
        if impl == "reference":
            ratio = "1.00x"
        else:  # fairseq has no reference loop of its own
            ratio = f"{r['tok_s'] / ref['tok_s']:.2f}x" if ref and impl != "fairseq" else "-"
        vs_fp32 = f"{r['tok_s'] / fp32_ref['tok_s']:.2f}x" if fp32_ref else "-"
        if impl == "fairseq":  # its own batches: no padding share or FLOP count of ours
            padding, mfu = "-", "-"
        else:
            padding, mfu = (
                f"{1 - r['tokens'] / r['positions']:.1%}",
                f"{r['flops'] / r['seconds'] / (peaks[amp] * 1e9):.0%}",
            )
        name = impl + (" (compile)" if comp else "") + (f" (activation_dropout {act})" if act else "")
        cells = [name, amp, r["steps"], f"{r['tok_s']:.0f}", f"{r['seconds'] / r['steps']:.3f}", padding]
        cells += [f"{r['peak_rss_mib']:.0f}", mfu, ratio, vs_fp32]
        cells += [f"{r['tok_s'] / fairseq['tok_s']:.2f}x"] if fairseq else []
        print("| " + " | ".join(str(c) for c in cells) + " |")


# ----------------------------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with train.de / train.en")
    p.add_argument("--steps", type=int, default=40, help="timed fp32 optimizer steps per row")
    p.add_argument(
        "--bf16-steps",
        type=int,
        default=None,
        help="timed bf16 steps (default steps/4, or 2 where bf16 is emulated: ~20x slower than fp32)",
    )
    p.add_argument("--warmup", type=int, default=4, help="untimed steps first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--target-tokens", type=float, default=2000, help="mean target tokens per batch")
    p.add_argument("--max-tokens", type=int, default=None, help="token budget (default: chosen for --target-tokens)")
    p.add_argument("--repeats", type=int, default=1, help="run every row this many times (alternating), keep the best")
    p.add_argument("--compile", action="store_true", help="add a torchlingo fp32 row with compile: true")
    p.add_argument("--no-bf16", action="store_true", help="skip the bf16 rows")
    p.add_argument(
        "--activation-dropout-row",
        action="store_true",
        help="add a torchlingo row in the default precision with activation_dropout 0.1 (dropout inside the "
        "feed-forward blocks, where nn.Transformer has it; torchlingo's default is 0, as fairseq)",
    )
    p.add_argument("--fairseq-train", type=Path, help="a fairseq-train executable: add a fairseq fp32 row")
    p.add_argument("--fairseq-max-tokens", type=int, default=2400, help="fairseq's --max-tokens (its own rule)")
    p.add_argument("--quick", action="store_true", help="few steps, for a smoke test")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args()


def plan_rows(args: argparse.Namespace, default_bf16: bool) -> list[tuple[str, str, bool, float]]:
    """The rows to time, in order: (loop, precision, compile, activation_dropout)."""
    rows = [("reference", "fp32", False, 0.0), ("torchlingo", "fp32", False, 0.0)]
    if args.fairseq_train:
        rows.insert(1, ("fairseq", "fp32", False, 0.0))
    if args.compile:
        rows.append(("torchlingo", "fp32", True, 0.0))
    if not args.no_bf16:
        rows += [("reference", "bf16", False, 0.0), ("torchlingo", "bf16", False, 0.0)]
    if args.activation_dropout_row:
        rows.append(("torchlingo", "bf16" if default_bf16 else "fp32", False, 0.1))
    return rows


def time_row(args: argparse.Namespace, row: tuple, setup: dict) -> dict:
    """One timing of one row (a child process; fairseq's own log for fairseq), printed as it comes."""
    impl, amp, comp, act = row
    if impl == "fairseq":
        r = run_fairseq(args.fairseq_train, setup["binarized"], args.steps, args.threads, args.fairseq_max_tokens)
        print(f"  fairseq    fp32: {r['tok_s']:.0f} target tok/s ({r['wpb']:.0f} per batch)", file=sys.stderr)
        return r
    steps = args.steps if amp == "fp32" else setup["bf16_steps"]
    warmup = args.warmup if amp == "fp32" or setup["native_bf16"] else 1
    spec = dict(impl=impl, amp=amp, compile=comp, activation_dropout=act, steps=steps, warmup=warmup)
    spec.update(threads=args.threads, data=str(args.data), spm=str(setup["spm"]), max_tokens=setup["max_tokens"])
    r = run_row(spec)
    stats = batch_stats(setup["dataset"], setup["batches"][warmup : warmup + steps])
    r.update(stats, steps=steps, tok_s=stats["tokens"] / r["seconds"])
    label = f"{impl:10s} {amp}{' compile' if comp else ''}{f' activation_dropout {act}' if act else ''}"
    print(f"  {label}: {r['tok_s']:.0f} target tok/s", file=sys.stderr)
    return r


def main() -> None:
    args = parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.quick:
        args.steps, args.warmup = min(args.steps, 8), 2
    if not (args.data / "train.de").is_file():
        sys.exit(f"{args.data}: no train.de / train.en here; pass --data")

    import torch

    from torchlingo.runtime import cpu_has_fast_bf16, resolve_amp_dtype

    torch.set_num_threads(args.threads)
    began, native_bf16 = time.perf_counter(), cpu_has_fast_bf16()
    spm = sp_model_path(args.data)
    config, dataset, loader = load(args.data, spm, 0)
    max_tokens = args.max_tokens or pick_max_tokens(dataset, config, args.target_tokens)
    config, dataset, loader = load(args.data, spm, max_tokens)
    batches = loader.batch_sampler.batches()
    default_bf16 = resolve_amp_dtype("auto", torch.device("cpu")) is torch.bfloat16
    rows = plan_rows(args, default_bf16)
    setup = dict(spm=spm, max_tokens=max_tokens, dataset=dataset, batches=batches, native_bf16=native_bf16)
    setup.update(bf16_steps=args.bf16_steps or (max(2, args.steps // 4) if native_bf16 else 2))
    if args.fairseq_train:
        setup["binarized"] = fairseq_data(args.data, spm, args.fairseq_train)
    results: dict = {}
    peaks: dict = {}
    for _ in range(args.repeats):
        update_peaks(peaks, args.threads)
        for row in rows:
            keep_best(results, row, time_row(args, row, setup))

    mean_tokens = sum(int(dataset.tgt_lengths[i]) + 1 for b in batches for i in b) / len(batches)
    print(
        f"\nMulti30k de-en train ({len(dataset)} pairs), 8k joint SentencePiece, 3+3 layers d256 h4 ff1024, "
        f"max_tokens {max_tokens} (mean {mean_tokens:.0f} target tokens/batch, {len(batches)} batches), "
        f"{args.threads} threads, warm-up {args.warmup} steps, best of {args.repeats}; MFU against the best "
        f"matmul peak of the {args.repeats} measured (one before each repeat)."
    )
    print(
        f"Matmul peak: fp32 {peaks['fp32']:.1f} GFLOP/s, bf16 {peaks['bf16']:.1f} GFLOP/s; "
        f"CPU native bf16: {native_bf16}; default precision (amp: auto) here: {'bf16' if default_bf16 else 'fp32'}.\n"
    )
    print_table(results, peaks)
    print(f"\n({time.perf_counter() - began:.0f} s in all)")


if __name__ == "__main__":
    main()
