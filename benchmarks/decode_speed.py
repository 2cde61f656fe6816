"""Decoding speed: batched greedy and beam search with the KV cache against a naive full-prefix decoder.

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/decode_speed.py \
        --checkpoint runs/multi30k_de_en/checkpoints/best.pt

Translates Multi30k test_2016_flickr (de -> en, 1,000 sentences) as `torchlingo translate` does by default (its
token-budget batches; --batch-sentences N for batches of N sentences) on CPU with 2 threads (as `Translator` does by
default: two batches at once, one thread each; --parallel-batches 1 for one at a time), in the default precision
(`--amp auto`: bf16 where the CPU runs it natively, else fp32; `--amp none` for fp32), greedy and beam 5 (best of
--repeats timings; glibc keeps freed memory for reuse, as in the `torchlingo` command), and a naive decoder (one
sentence at a time, the whole prefix recomputed every step, as the educational libraries do) on the first
--reference-sentences sentences. Prints one table: sentences/s, target tokens/s, mean hypothesis length (tokens,
without </s>) and BLEU, for the whole set and for the naive decoder's prefix.

--ctranslate2 adds, on the same weights and interleaved with ours in every repeat (the best of each counts), our
decoder in fp32 (if the default precision is not fp32 already) and in int8 (`--quantize int8`), and CTranslate2
fp32 and int8: the checkpoint is exported once (`torchlingo.export`, fp32) to a temporary folder and loaded with
compute_type "float32" and "int8" (CTranslate2 quantizes at load), each in the faster of inter_threads=T x
intra_threads=1 and 1 x T (T: --threads), batches of --batch-sentences (64 with the default 0). Every timing is
text in, text out: our tokenizer's encode and decode are included for both engines. Column 'same' is the share of
sentences whose tokens equal our fp32 decoder's (same search).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runs from a checkout without installing
# the team's copy beside the repository (or beside the directory of worktrees holding it)
_CANDIDATES = [base / "shared" / "data" / "multi30k" for base in (ROOT.parent, ROOT.parent.parent)]
DEFAULT_DATA = next((c for c in _CANDIDATES if c.is_dir()), _CANDIDATES[0])

from torchlingo.data_processing.batching import pad_batch  # noqa: E402
from torchlingo.evaluation import score_corpus  # noqa: E402
from torchlingo.export import CTranslate2Translator, export_ctranslate2  # noqa: E402
from torchlingo.fastpath import reuse_freed_memory  # noqa: E402
from torchlingo.reference import reference_beam, reference_greedy  # noqa: E402
from torchlingo.runtime import resolve_amp_dtype  # noqa: E402
from torchlingo.translator import Translator  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a torchlingo checkpoint (best.pt / last.pt)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="folder with SPLIT.SRC and SPLIT.TGT")
    p.add_argument("--split", default="test_2016_flickr")
    p.add_argument("--src-lang", default="de")
    p.add_argument("--tgt-lang", default="en")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--batch-sentences",
        type=int,
        default=0,
        help="sentences per batch; 0 (default): translate's own batches (the checkpoint's decode_max_tokens budget, "
        "evened out over the parallel batches); CTranslate2 then takes batches of 64",
    )
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
    p.add_argument(
        "--ctranslate2",
        action="store_true",
        help="also CTranslate2 fp32 and int8 on the same weights, and our decoder in fp32 (needs ctranslate2)",
    )
    return p.parse_args(argv)


def read_lines(path: Path, limit: int | None) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[:limit] if limit else lines


Decode = Callable[[list[list[int]]], list[list[int]]]  # source ids in, best hypothesis ids out


def best_of(engines: dict[str, Decode], vocabs, sources: list[str], repeats: int) -> dict[str, tuple]:
    """Per engine, its best (seconds, ids, texts) over `repeats` rounds, the engines interleaved in each round (in a
    rotated order) so that a machine's drift affects them alike. Timed: text in, text out (encode, decode, detokenize).
    """
    src_vocab, tgt_vocab = vocabs
    names, best = list(engines), {}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            ids = engines[name](src_vocab.encode_many(sources))
            texts = [tgt_vocab.decode(i) for i in ids]
            seconds = time.perf_counter() - start
            if name not in best or seconds < best[name][0]:
                best[name] = (seconds, ids, texts)
    return best


def ours(translator: Translator) -> Decode:
    """Our decoder as a `Decode`: the best hypothesis of `Translator.decode_ids`."""
    return lambda src_ids: [nbest[0][0] for nbest in translator.decode_ids(src_ids)]


def run_fast(translator: Translator, sources: list[str], repeats: int) -> tuple[float, list[list[int]], list[str]]:
    """Best wall time of `translate`-equivalent work (tokenize, batch, decode, detokenize) and the token ids."""
    vocabs = (translator.src_vocab, translator.tgt_vocab)
    return best_of({"ours": ours(translator)}, vocabs, sources, repeats)["ours"]


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


def ctranslate2_rows(
    folder, translators: dict[str, Translator], sources: list[str], refs: list[str], repeats: int, n_ref: int = 0
) -> list[dict]:
    """Rows for one search: our decoder (`translators`: label -> Translator, one labelled "fp32", whose tokens the
    others' 'same' compares with) and CTranslate2 fp32 and int8 from the exported `folder`, each in its faster
    thread layout; all interleaved in each of the `repeats` (see `best_of`)."""
    reference = translators["fp32"]
    threads = torch.get_num_threads()
    engines = {label: ours(t) for label, t in translators.items()}
    for compute_type in ("float32", "int8"):
        for inter, intra in dict.fromkeys([(threads, 1), (1, threads)]):
            ct2 = CTranslate2Translator.like(
                reference, folder, compute_type=compute_type, inter_threads=inter, intra_threads=intra
            )
            engines[(compute_type, inter, intra)] = ct2.decode_ids
    warm = sources[: reference.max_sentences or len(sources)]
    for engine in engines.values():
        engine(reference.src_vocab.encode_many(warm))
    best = best_of(engines, (reference.src_vocab, reference.tgt_vocab), sources, repeats)
    search = "greedy" if reference.settings.beam_size == 1 else f"beam {reference.settings.beam_size}"
    rows = [make_row(f"{search}, batched + KV cache, {label}", *best[label], refs, n_ref) for label in translators]
    for compute_type in ("float32", "int8"):
        key = min((k for k in best if k[0] == compute_type), key=lambda k: best[k][0])
        name = f"{search}, CTranslate2 {compute_type.replace('float', 'fp')} ({key[1]} inter x {key[2]} intra)"
        rows.append(make_row(name, *best[key], refs, n_ref))
    fp32_ids = best["fp32"][1]
    for row in rows:
        same = sum(a == b for a, b in zip(row["ids"], fp32_ids)) / len(fp32_ids)
        row["same"] = None if row["ids"] is fp32_ids else same
    return rows


def make_row(name: str, seconds: float, ids: list[list[int]], texts: list[str], refs: list[str], n_ref: int) -> dict:
    """One table row: speed, mean length, BLEU on the whole set and on the first `n_ref` sentences."""
    n = len(ids)
    tokens = sum(len(i) + 1 for i in ids)  # generated tokens, </s> included
    prefix = score_corpus(texts[:n_ref], refs[:n_ref], metrics=("bleu",))["bleu"] if n_ref else float("nan")
    return {
        "decoder": name,
        "sentences": n,
        "seconds": seconds,
        "sent_per_s": n / seconds,
        "tok_per_s": tokens / seconds,
        "mean_len": sum(map(len, ids)) / n,
        "bleu": score_corpus(texts, refs[:n], metrics=("bleu",))["bleu"],
        "bleu_prefix": prefix,
        "ids": ids,
    }


def print_header(n_ref: int, same: bool) -> None:
    columns = [f"{'decoder':<50}", f"{'sents':>5}", f"{'sent/s':>8}", f"{'tok/s':>8}", f"{'mean len':>8}"]
    columns += [f"{'BLEU':>5}", f"{f'BLEU@{n_ref}':>9}"] + ([f"{'same':>5}"] if same else [])
    header = "| " + " | ".join(columns) + " |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|", flush=True)


def print_row(r: dict, same: bool) -> None:
    line = (
        f"| {r['decoder']:<50} | {r['sentences']:>5} | {r['sent_per_s']:>8.1f} | {r['tok_per_s']:>8.0f} | "
        f"{r['mean_len']:>8.2f} | {r['bleu']:>5.1f} | {r['bleu_prefix']:>9.1f} |"
    )
    if same:
        share = "-" if r.get("same") is None else f"{r['same']:.0%}"
        line += f" {share:>5} |"
    print(line, flush=True)


def make_translator(args: argparse.Namespace, beam: int, amp: str | None = None, quantize: str = "none") -> Translator:
    return Translator.from_checkpoint(
        args.checkpoint,
        beam_size=beam,
        **({"decode_max_tokens": 10**9} if args.batch_sentences else {}),  # 0: the checkpoint's token budget
        progress=False,
        max_sentences=args.batch_sentences or None,
        amp=amp or args.amp,
        decode_parallel_batches=args.parallel_batches,
        quantize=quantize,
    )


def print_intro(args: argparse.Namespace, translator: Translator, n_sources: int, n_ref: int) -> None:
    """The lines above the table: the setup, the BLEU signature, then the table header."""
    at_once, each = translator.parallelism(n_sources)  # as Translator.batches asks it: at most one batch a sentence
    sig = score_corpus(["a"], ["a"], metrics=("bleu",))["bleu_signature"]
    batches = f"batches of {args.batch_sentences} sentences" if args.batch_sentences else "translate's batches"
    precision = "bf16" if resolve_amp_dtype(args.amp, torch.device("cpu")) is torch.bfloat16 else "fp32"
    print(
        f"checkpoint {args.checkpoint} | {args.split} | {torch.get_num_threads()} threads: {at_once} batch(es) at "
        f"once, {each} thread(s) each | {precision} CPU (amp: {args.amp}) | "
        f"{batches} | BLEU {sig}"
    )
    print(f"naive decoders run on the first {n_ref} sentences; 'BLEU@{n_ref}' compares every decoder on those")
    if args.ctranslate2:
        import ctranslate2

        print(
            f"CTranslate2 {ctranslate2.__version__}: exported once in fp32, int8 quantized at load; threads as "
            "inter x intra, the faster layout shown; 'same': sentences whose tokens equal our fp32 decoder's; "
            "encode and decode timed for both"
        )
    print_header(n_ref, args.ctranslate2)


def fast_rows(args, fast: Translator, folder, sources: list[str], refs: list[str], n_ref: int) -> list[dict]:
    """The batched decoder's row for one search; with a CTranslate2 `folder`, `ctranslate2_rows` instead."""
    beam = fast.settings.beam_size
    if folder is None:
        fast.decode_ids(fast.src_vocab.encode_many(sources[: args.batch_sentences or 64]))  # warm-up
        name = f"{'greedy' if beam == 1 else f'beam {beam}'}, batched + KV cache"
        return [make_row(name, *run_fast(fast, sources, args.repeats), refs, n_ref)]
    if resolve_amp_dtype(args.amp, torch.device("cpu")) is None:
        by_precision = {"fp32": fast}
    else:
        by_precision = {f"bf16 (amp {args.amp})": fast, "fp32": make_translator(args, beam, "none")}
    by_precision["int8 (--quantize int8)"] = make_translator(args, beam, "none", quantize="int8")
    return ctranslate2_rows(folder, by_precision, sources, refs, args.repeats, n_ref)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.ctranslate2 and importlib.util.find_spec("ctranslate2") is None:
        sys.exit("decode_speed.py --ctranslate2: the ctranslate2 package is not installed (pip install ctranslate2)")
    torch.set_num_threads(args.threads)
    reuse_freed_memory()  # as the torchlingo command does (greedy 1.16-1.23x; CTranslate2 runs in this process too)
    data = Path(args.data)
    sources = read_lines(data / f"{args.split}.{args.src_lang}", args.limit)
    refs = read_lines(data / f"{args.split}.{args.tgt_lang}", args.limit)
    n_ref = min(args.reference_sentences, len(sources))
    translators = {beam: make_translator(args, beam) for beam in (1, args.beam)}
    print_intro(args, translators[1], len(sources), n_ref)
    rows = []

    def add(r: dict) -> None:
        """One table row, printed as soon as it is measured."""
        rows.append(r)
        print_row(r, args.ctranslate2)

    with tempfile.TemporaryDirectory(prefix="decode_speed_ct2_") as tmp:
        folder = export_ctranslate2(args.checkpoint, Path(tmp) / "model") if args.ctranslate2 else None
        for beam, fast in translators.items():
            for r in fast_rows(args, fast, folder, sources, refs, n_ref):
                add(r)
            if n_ref:
                seconds, ids, texts = run_naive(fast, sources[:n_ref], beam)
                name = f"{'greedy' if beam == 1 else f'beam {beam}'}, naive (full prefix, 1 sentence)"
                add(make_row(name, seconds, ids, texts, refs, n_ref))
    return rows


if __name__ == "__main__":
    main()
