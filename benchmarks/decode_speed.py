"""Decoding speed: batched greedy and beam search with the KV cache against a naive full-prefix decoder.

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/decode_speed.py \
        --checkpoint runs/multi30k_de_en/checkpoints/best.pt

Translates Multi30k test_2016_flickr (de -> en, 1,000 sentences) in batches of 64 sentences on CPU with 2 threads
(as `Translator` does by default: two batches at once, one thread each; --parallel-batches 1 for one at a time),
in the default precision (`--amp auto`: bf16 where the CPU runs it natively, else fp32; `--amp none` for fp32),
greedy and beam 5 (best of --repeats timings), and a naive decoder (one sentence at a time, the whole prefix
recomputed every step, as the educational libraries do) on the first --reference-sentences sentences. Prints one
table: sentences/s, target tokens/s, mean hypothesis length (tokens, without </s>) and BLEU, for the whole set and
for the naive decoder's prefix.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runs from a checkout without installing
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "multi30k"  # the team's copy beside the repository

from torchlingo.data_processing.batching import pad_batch  # noqa: E402
from torchlingo.evaluation import score_corpus  # noqa: E402
from torchlingo.reference import reference_beam, reference_greedy  # noqa: E402
from torchlingo.translator import Translator  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a torchlingo checkpoint (best.pt / last.pt)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="folder with SPLIT.SRC and SPLIT.TGT")
    p.add_argument("--split", default="test_2016_flickr")
    p.add_argument("--src-lang", default="de")
    p.add_argument("--tgt-lang", default="en")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-sentences", type=int, default=64)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--limit", type=int, default=None, help="only the first N sentences")
    p.add_argument(
        "--reference-sentences", type=int, default=50, help="sentences the naive decoder translates (0: skip it)"
    )
    p.add_argument("--repeats", type=int, default=3, help="time each fast decoder this many times; the best counts")
    p.add_argument(
        "--parallel-batches",
        type=int,
        default=None,
        help="batches decoded at once, each on its share of the threads (default: the Translator's, one per thread)",
    )
    p.add_argument(
        "--amp",
        default="auto",
        choices=("auto", "none", "bf16"),
        help="decoding precision: auto is the default (bf16 where the CPU runs it natively), none is fp32",
    )
    return p.parse_args(argv)


def read_lines(path: Path, limit: int | None) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[:limit] if limit else lines


def run_fast(translator: Translator, sources: list[str], repeats: int) -> tuple[float, list[list[int]], list[str]]:
    """Best wall time of `translate`-equivalent work (tokenize, batch, decode, detokenize) and the token ids."""
    best, ids = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        nbest = translator.decode_ids(translator.src_vocab.encode_many(sources))
        texts = [translator.tgt_vocab.decode(n[0][0]) for n in nbest]
        best = min(best, time.perf_counter() - start)
        ids = [n[0][0] for n in nbest]
    return best, ids, texts


def run_naive(translator: Translator, sources: list[str], beam: int) -> tuple[float, list[list[int]], list[str]]:
    model, c = translator.model, translator.settings
    start = time.perf_counter()
    ids = []
    for text in sources:
        src = pad_batch([torch.tensor(translator.src_vocab.encode(text), dtype=torch.long)]).to(translator.device)
        if beam == 1:
            ids.append(reference_greedy(model, src, c.max_len_a, c.max_len_b))
        else:
            ids.append(reference_beam(model, src, beam, c.length_penalty, c.max_len_a, c.max_len_b)[0][0])
    texts = [translator.tgt_vocab.decode(i) for i in ids]
    return time.perf_counter() - start, ids, texts


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    sources = read_lines(data / f"{args.split}.{args.src_lang}", args.limit)
    refs = read_lines(data / f"{args.split}.{args.tgt_lang}", args.limit)
    n_ref = min(args.reference_sentences, len(sources))
    rows = []
    sig = score_corpus(["a"], ["a"], metrics=("bleu",))["bleu_signature"]
    from torchlingo.runtime import resolve_amp_dtype

    dtype = resolve_amp_dtype(args.amp, torch.device("cpu"))

    def translator(beam: int) -> Translator:
        return Translator.from_checkpoint(
            args.checkpoint,
            beam_size=beam,
            decode_max_tokens=10**9,
            progress=False,
            max_sentences=args.batch_sentences,
            amp=args.amp,
            decode_parallel_batches=args.parallel_batches,
        )

    translators = {beam: translator(beam) for beam in (1, args.beam)}
    at_once, each = translators[1].parallelism(-(-len(sources) // args.batch_sentences))
    print(
        f"checkpoint {args.checkpoint} | {args.split} | {torch.get_num_threads()} threads: {at_once} batch(es) at "
        f"once, {each} thread(s) each | {'bf16' if dtype is torch.bfloat16 else 'fp32'} CPU (amp: {args.amp}) | "
        f"batches of {args.batch_sentences} sentences | BLEU {sig}"
    )
    print(f"naive decoders run on the first {n_ref} sentences; 'BLEU@{n_ref}' compares every decoder on those")
    columns = (
        f"{'decoder':<44}",
        f"{'sents':>5}",
        f"{'sent/s':>8}",
        f"{'tok/s':>8}",
        f"{'mean len':>8}",
        f"{'BLEU':>5}",
        f"{f'BLEU@{n_ref}':>9}",
    )
    header = "| " + " | ".join(columns) + " |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|", flush=True)

    def add(name: str, seconds: float, ids: list[list[int]], texts: list[str]) -> None:
        """One table row, printed as soon as it is measured."""
        n = len(ids)
        tokens = sum(len(i) + 1 for i in ids)  # generated tokens, </s> included
        prefix = score_corpus(texts[:n_ref], refs[:n_ref], metrics=("bleu",))["bleu"] if n_ref else float("nan")
        r = {
            "decoder": name,
            "sentences": n,
            "seconds": seconds,
            "sent_per_s": n / seconds,
            "tok_per_s": tokens / seconds,
            "mean_len": sum(map(len, ids)) / n,
            "bleu": score_corpus(texts, refs[:n], metrics=("bleu",))["bleu"],
            "bleu_prefix": prefix,
        }
        rows.append(r)
        print(
            f"| {r['decoder']:<44} | {r['sentences']:>5} | {r['sent_per_s']:>8.1f} | {r['tok_per_s']:>8.0f} | "
            f"{r['mean_len']:>8.2f} | {r['bleu']:>5.1f} | {r['bleu_prefix']:>9.1f} |",
            flush=True,
        )

    for beam in (1, args.beam):
        fast = translators[beam]
        fast.decode_ids(fast.src_vocab.encode_many(sources[: args.batch_sentences]))  # warm-up
        seconds, ids, texts = run_fast(fast, sources, args.repeats)
        add(f"{'greedy' if beam == 1 else f'beam {beam}'}, batched + KV cache", seconds, ids, texts)
        if n_ref:
            seconds, ids, texts = run_naive(fast, sources[:n_ref], beam)
            add(f"{'greedy' if beam == 1 else f'beam {beam}'}, naive (full prefix, 1 sentence)", seconds, ids, texts)
    return rows


if __name__ == "__main__":
    main()
