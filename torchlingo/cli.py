"""The `torchlingo` command: train | prepare | translate | evaluate | average | export | download (the arguments
are in `cliargs`).

    torchlingo train CONFIG [--set KEY=VALUE ...] [--resume [--accept-data-change] | --overwrite]
    torchlingo prepare CONFIG [--workers N] [--set KEY=VALUE ...] [--force]
    torchlingo translate --checkpoint PATH|RUN_DIR [--checkpoint PATH ...] [--input FILE] [--output FILE]
                         [--beam-size N] [--length-penalty A] [--n-best N] [--scores] [--json]
                         [--sampling topk|topp ...] [--prefix FILE]
    torchlingo evaluate --checkpoint PATH|RUN_DIR [--checkpoint PATH ...] [--src FILE] [--ref FILE] [--json]
    torchlingo evaluate --run RUN_DIR [--json]
    torchlingo translate|evaluate --engine ctranslate2 --model DIR [--compute-type T] [...]
    torchlingo average (--checkpoints A B ... | --run RUN_DIR --last N) --output OUT.pt
    torchlingo export --checkpoint PATH --format ctranslate2 --output DIR [--quantization Q]
    torchlingo download multi30k --dest DIR [--base-url URL]

A user mistake (a torchlingo error, or a file that cannot be read or written) prints one line
`torchlingo: error: ...` and exits 2; Ctrl-C exits 130. Both are handled in `main` only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .cliargs import build_parser
from .errors import DataError, TorchlingoError, TrainingInterrupted, first_line
from .files import write_text
from .inputs import SOURCE, TARGET, checkpoint_path, column, looks_like_tsv, run_test_set

if TYPE_CHECKING:
    from .export import CTranslate2Translator
    from .translator import Translator

log = logging.getLogger("torchlingo")
EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


# -- train --------------------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from .config import Config
    from .distributed import is_writer
    from .experiment import run_experiment

    if args.accept_data_change and not args.resume:
        raise TorchlingoError("--accept-data-change: only with --resume (a new run reads its data as it is)")
    config = Config.from_yaml(args.config, args.set)
    metrics = run_experiment(
        config,
        resume=args.resume,
        overwrite=args.overwrite,
        accept_data_change=args.accept_data_change,
        train_log=True,  # the console's lines, with timestamps, also in RUN_DIR/train.log
    )
    if not is_writer():
        return 0  # under torchrun rank 0 reports
    print(f"run directory: {config.run_dir}")
    print(
        f"steps: {metrics['steps']}  best step: {metrics['best_step']}  best validation loss: "
        f"{_fmt(metrics['best_val_loss'])}  training: {metrics['train_time_s']:.0f} s, "
        f"{metrics['tokens_per_second']:,.0f} target tokens/s"
    )
    if "test_bleu" in metrics:
        print(f"test BLEU = {metrics['test_bleu']:.2f}  {metrics.get('test_bleu_signature', '')}".rstrip())
        print(f"test chrF = {metrics['test_chrf']:.2f}  {metrics.get('test_chrf_signature', '')}".rstrip())
    if "test_bleu_averaged" in metrics:
        print(f"test BLEU = {metrics['test_bleu_averaged']:.2f} (average of {len(metrics['test_averaged_from'])})")
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


# -- prepare ------------------------------------------------------------------------------------------------
def cmd_prepare(args: argparse.Namespace) -> int:
    """Tokenize the training corpus into shards (see data_processing/prepare.py); fresh shards are kept."""
    from .config import Config
    from .data_processing import prepare, shards
    from .errors import ConfigError
    from .rundir import RunLock

    config = Config.from_yaml(args.config, args.set)
    if not config.train_file:
        raise ConfigError("train_file: must be set to prepare (a TSV file, or a prefix with src_lang/tgt_lang)")
    directory = shards.shard_dir(config)
    # Shards inside a run directory are written under its lock (a training run there may be reading them).
    inside = directory.resolve().is_relative_to(config.run_dir.resolve())
    lock = RunLock(config.run_dir).acquire() if inside else None
    try:
        with prepare.prepare_lock(directory):
            why = "--force" if args.force else shards.stale_reason(directory, config)
            if why is None:
                print(f"{directory}: the prepared shards are up to date")
                return 0
            manifest = prepare.prepare_shards(config, directory, workers=args.workers)
    finally:
        if lock is not None:
            lock.release()
    skipped = sum(manifest["skipped"].values())
    print(f"{directory}: {manifest['pairs']} pairs ({skipped} skipped), {manifest['dtype']} ids, prepared ({why})")
    return 0


# -- translate / evaluate -----------------------------------------------------------------------------------
def _translator(args: argparse.Namespace) -> Translator | CTranslate2Translator:
    from .translator import Translator

    if _engine(args) == "ctranslate2":
        return _ct2_translator(args)
    overrides = {
        k: v
        for k, v in (
            ("beam_size", args.beam_size),
            ("length_penalty", args.length_penalty),
            ("decode_max_tokens", args.max_tokens),
            ("decode_max_sentences", args.max_sentences),
            ("decode_parallel_batches", args.parallel_batches),
            ("device", args.device),
            ("amp", args.amp),
            ("quantize", args.quantize),
        )
        if v is not None
    }
    overrides.update(_search_overrides(args))
    return Translator.from_checkpoint([checkpoint_path(c) for c in args.checkpoint], **overrides)


def _engine(args: argparse.Namespace) -> str:
    """--engine, checked against --model and --compute-type (one-line errors naming the flag)."""
    if args.engine == "ctranslate2" and args.model is None:
        raise TorchlingoError("--engine ctranslate2: give --model DIR, the folder `torchlingo export` wrote")
    if args.engine != "ctranslate2":
        for flag, value in (("--model", args.model), ("--compute-type", args.compute_type)):
            if value is not None:
                raise TorchlingoError(f"{flag}: only with --engine ctranslate2 (torchlingo decodes --checkpoint)")
    return args.engine


def _ct2_translator(args: argparse.Namespace) -> CTranslate2Translator:
    """--engine ctranslate2: the exported --model folder, its decoding defaults overridden by the flags that apply;
    --parallel-batches is CTranslate2's inter_threads (batches decoded at once), each on its share of the threads."""
    import torch

    from .export import load_ctranslate2

    unsupported = {
        "--sampling": args.sampling,
        "--prefix": args.prefix,
        "--amp": args.amp,
        "--device": args.device not in (None, "cpu"),
        "--quantize": args.quantize not in (None, "none"),  # CTranslate2's own: --compute-type int8
    }
    for flag, value in unsupported.items():
        if value:
            raise TorchlingoError(f"{flag}: not supported with --engine ctranslate2 (it runs one model on CPU)")
    n_best = _search_overrides(args)["n_best"]  # and --top-k & co. without --sampling: torchlingo's errors
    overrides = {
        "beam_size": args.beam_size,
        "length_penalty": args.length_penalty,
        "decode_max_tokens": args.max_tokens,
    }
    max_sentences = args.max_sentences or 64
    workers = args.parallel_batches or min(torch.get_num_threads(), 4)
    translator = load_ctranslate2(
        args.model,
        max_sentences,
        compute_type=args.compute_type or "default",
        inter_threads=workers,
        intra_threads=max(1, torch.get_num_threads() // workers),
        **{k: v for k, v in overrides.items() if v is not None},
    )
    if n_best > translator.settings.beam_size:
        raise TorchlingoError(f"--n-best {n_best}: needs beam search with --beam-size {n_best} or more")
    translator.n_best = n_best
    translator.with_scores = any(getattr(args, f, None) for f in ("scores", "json", "n_best"))  # written scores
    return translator


def _search_overrides(args: argparse.Namespace) -> dict:
    """Translator keywords from --n-best and --sampling/--top-k/--top-p/--temperature/--seed."""
    from .search import Sampling

    out = {"n_best": getattr(args, "n_best", None) or 1}
    if out["n_best"] > 1 and (args.sampling is not None or (args.beam_size or out["n_best"]) < out["n_best"]):
        raise TorchlingoError(f"--n-best {out['n_best']}: needs beam search with --beam-size {out['n_best']} or more")
    given = [f for f in ("top_k", "top_p", "temperature", "seed") if getattr(args, f) is not None]
    if args.sampling is None:
        if given:
            raise TorchlingoError(f"--{given[0].replace('_', '-')}: only with --sampling topk|topp")
        return out
    values = {f: getattr(args, f) for f in given}
    try:
        out["sampling"] = Sampling(method=args.sampling, **values)
    except ValueError as e:
        raise TorchlingoError(f"--sampling: {e}") from None
    return out


def read_prefixes(path: str | None, n_lines: int) -> list[str] | None:
    """--prefix FILE: one target prefix a line (empty: none), aligned with the input."""
    if path is None:
        return None
    prefixes = read_text_lines(path)
    if len(prefixes) != n_lines:
        raise DataError(f"{path} has {len(prefixes)} lines but the input has {n_lines}; one prefix a source line")
    return prefixes


def read_text_lines(path: str | None) -> list[str]:
    """Lines of a UTF-8 file, or of stdin for None or '-', without line ends."""
    name = "<stdin>" if path in (None, "-") else path
    try:
        if path in (None, "-"):
            data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode("utf-8")
        else:
            data = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"{name}: cannot read ({e.strerror or e})") from None
    from .data_processing.textfile import check_text_start, not_utf8

    check_text_start(name, data)
    if b"\0" in data:
        raise not_utf8(name, data[: data.index(b"\0")].count(b"\n") + 1)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{name}:{line}: invalid UTF-8 at byte {e.start}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def read_sentences(path: str | None, which: int = SOURCE) -> list[str]:
    """The sentences of a plain-text or TSV file (or stdin): the TSV's source (or target) column, header skipped."""
    return column("<stdin>" if path in (None, "-") else path, read_text_lines(path), which)


def translate_lines(
    translator: Translator | CTranslate2Translator, lines: list[str], prefixes: list[str] | None = None
) -> list[str]:
    """Translate the non-empty lines; an empty input line gives an empty output line, so the output stays aligned."""
    return [nbest[0][0] for nbest in translate_nbest_lines(translator, lines, prefixes)]


def translate_nbest_lines(
    translator: Translator | CTranslate2Translator, lines: list[str], prefixes: list[str] | None = None
) -> list[list]:
    """Per line its n-best (text, score) list; an empty line gets [("", 0.0)]."""
    todo = [i for i, ln in enumerate(lines) if ln.strip()]
    out: list[list] = [[("", 0.0)] for _ in lines]
    if todo:
        todo_prefixes = [prefixes[i] for i in todo] if prefixes is not None else None
        texts = [lines[i].strip() for i in todo]
        numbers = [i + 1 for i in todo]  # warnings name the line of the file, empty lines counted
        for i, nbest in zip(todo, translator.translate_nbest(texts, todo_prefixes, lines=numbers)):
            out[i] = nbest
    return out


def format_hypotheses(nbests: list[list], n_best: int | None, scores: bool, as_json: bool) -> list[str]:
    """Output lines: the text; `score<TAB>text` with --scores; with --n-best, `index<TAB>score<TAB>text` per
    hypothesis (index: the 0-based input line); --json: one JSON object a hypothesis (index, rank, score, text)."""
    out = []
    for index, nbest in enumerate(nbests):
        for rank, (text, score) in enumerate(nbest if n_best else nbest[:1]):
            if as_json:
                out.append(json.dumps({"index": index, "rank": rank, "score": score, "text": text}, ensure_ascii=False))
            elif n_best:
                out.append(f"{index}\t{score:.6f}\t{text}")
            else:
                out.append(f"{score:.6f}\t{text}" if scores else text)
    return out


def write_text_lines(path: str | None, lines: list[str]) -> None:
    text = "".join(ln + "\n" for ln in lines)
    if path in (None, "-"):
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        write_text(path, text)
    except OSError as e:
        raise DataError(f"{path}: cannot write ({e.strerror or e})") from None


def check_output(path: str | None) -> None:
    """An --output that cannot be written fails before anything is translated."""
    if path in (None, "-"):
        return
    out = Path(path)
    parent = out.parent
    if out.is_dir():
        raise DataError(f"{out}: is a directory; --output needs a file name")
    if not parent.is_dir():
        raise DataError(f"{out}: the directory {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise DataError(f"{out}: cannot write in {parent} (permission denied)")


def cmd_translate(args: argparse.Namespace) -> int:
    from .unknowns import report_input

    check_output(args.output)
    lines = read_sentences(args.input) if args.input not in (None, "-") else None  # a bad file fails at once
    translator = _translator(args)  # a bad checkpoint fails before anyone types into stdin
    if lines is None and args.output in (None, "-") and args.prefix is None and sys.stdin.isatty():
        return interactive(translator, args)
    lines = read_sentences(args.input) if lines is None else lines
    report_input(args.input or "<stdin>", translator.src_vocab, lines)
    prefixes = read_prefixes(args.prefix, len(lines))
    nbests = translate_nbest_lines(translator, lines, prefixes)
    write_text_lines(args.output, format_hypotheses(nbests, args.n_best, args.scores, args.json))
    return 0


def interactive(translator: Translator | CTranslate2Translator, args: argparse.Namespace) -> int:
    """stdin is a terminal: translate each line as it is typed, until end of input (Ctrl-D)."""
    print("torchlingo: type a sentence and press Enter; Ctrl-D ends", file=sys.stderr)
    for line in sys.stdin:
        nbests = translate_nbest_lines(translator, [line.rstrip("\r\n")])
        write_text_lines(None, format_hypotheses(nbests, args.n_best, args.scores, args.json))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import score_corpus
    from .unknowns import report_input

    check_output(args.output)
    _evaluate_defaults(args)
    src = read_sentences(args.src) if args.src not in (None, "-") else None
    refs = _references(args)
    translator = _translator(args)
    src = read_sentences(args.src) if src is None else src
    report_input(args.src or "<stdin>", translator.src_vocab, src)
    if len(src) != len(refs):
        raise DataError(
            f"{args.src or '<stdin>'} has {len(src)} lines but {args.ref} has {len(refs)}; "
            "source and reference must be aligned, one sentence a line"
        )
    if not refs:
        raise DataError(f"{args.src or '<stdin>'} and {args.ref} are empty: no sentences to translate and score")
    hyps = translate_lines(translator, src, read_prefixes(args.prefix, len(src)))
    if args.output:
        write_text_lines(args.output, hyps)
    scores = score_corpus(hyps, refs, metrics=("bleu", "chrf", "ter"))
    if args.json:
        print(json.dumps(scores, indent=2, ensure_ascii=False))
    else:
        for name, label in (("bleu", "BLEU"), ("chrf", "chrF"), ("ter", "TER")):
            print(f"{label} = {scores[name]:.2f}  {scores.get(name + '_signature', '')}".rstrip())
    return 0


def _evaluate_defaults(args: argparse.Namespace) -> None:
    """--run RUN_DIR: the run's test set (from its config.yaml) and its best checkpoint, unless given otherwise
    (with --engine ctranslate2 the model is --model's)."""
    ct2 = _engine(args) == "ctranslate2"
    if args.run is not None:
        src, ref = run_test_set(args.run)
        if args.src is None and args.ref is None:
            args.src, args.ref = src, ref
        if not ct2:
            args.checkpoint = args.checkpoint or [str(checkpoint_path(args.run))]
    if args.checkpoint is None and not ct2:
        raise TorchlingoError("evaluate: give --checkpoint PATH (a checkpoint or a run directory) or --run RUN_DIR")


def _references(args: argparse.Namespace) -> list[str]:
    """--ref's sentences (a TSV's target column), or the target column of a TSV --src."""
    if args.ref is not None:
        return read_sentences(args.ref, TARGET)
    if args.src in (None, "-"):
        raise TorchlingoError("evaluate: --ref is needed when the source comes from stdin")
    if not looks_like_tsv(args.src, read_text_lines(args.src)):
        raise TorchlingoError(f"evaluate: {args.src} is plain text; give the references with --ref (or a TSV --src)")
    args.ref = args.src
    return read_sentences(args.src, TARGET)


# -- average ------------------------------------------------------------------------------------------------
def cmd_average(args: argparse.Namespace) -> int:
    from .checkpoint import average_checkpoints, last_checkpoints, save_checkpoint

    if args.run is not None and args.last is None:
        raise TorchlingoError("--run: say how many of its step checkpoints to average with --last N")
    if args.run is None and args.last is not None:
        raise TorchlingoError("--last: only with --run RUN_DIR (or list the files with --checkpoints)")
    paths = args.checkpoints if args.checkpoints else last_checkpoints(args.run, args.last)
    out = Path(args.output)
    if out.resolve() in {Path(p).resolve() for p in paths}:
        raise TorchlingoError(f"--output {out}: is one of the checkpoints being averaged; choose another file")
    check_output(args.output)
    save_checkpoint(average_checkpoints(paths), out)
    print(f"averaged {len(paths)} checkpoints into {out}")
    return 0


# -- export -------------------------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_ctranslate2

    print(f"wrote {export_ctranslate2(args.checkpoint, args.output, args.quantization)}")
    return 0


# -- download -----------------------------------------------------------------------------------------------
def cmd_download(args: argparse.Namespace) -> int:
    from .download import DEFAULT_BASE_URL, download_multi30k

    paths = download_multi30k(
        args.dest,
        langs=args.langs,
        splits=args.splits,
        base_url=args.base_url or DEFAULT_BASE_URL,
        overwrite=args.overwrite,
    )
    for path in paths:
        print(path)
    return 0


# -- main ---------------------------------------------------------------------------------------------------
COMMANDS = {
    "train": cmd_train,
    "prepare": cmd_prepare,
    "translate": cmd_translate,
    "evaluate": cmd_evaluate,
    "average": cmd_average,
    "export": cmd_export,
    "download": cmd_download,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of `torchlingo` and `python -m torchlingo`; returns the exit status."""
    args = build_parser().parse_args(argv)
    from .logs import log_to_stderr

    log_to_stderr()  # progress lines to stderr; the library itself installs no handler
    if args.command in ("train", "translate", "evaluate"):
        from .fastpath import bound_kernel_caches, reuse_freed_memory

        reuse_freed_memory()  # this process is ours: freed step memory is reused, not page-faulted back
        if args.command == "train":
            bound_kernel_caches()  # before the first bf16 matmul; decoding's few shapes are all worth keeping
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        hint = " (resume with: torchlingo train CONFIG --resume)" if args.command == "train" else ""
        print(f"\ntorchlingo: interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except TrainingInterrupted as e:  # SIGINT / SIGTERM: last.pt saved; exit 130 / 143
        from .distributed import is_writer

        if is_writer():  # under torchrun every rank stops at the same step; rank 0 says so
            print(f"torchlingo: {e}", file=sys.stderr)
        return e.exit_code
    except TorchlingoError as e:
        return _fail(str(e))
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        return _fail(f"{where}{e.strerror or e}")


def _fail(message: str) -> int:
    print(f"torchlingo: error: {first_line(message, limit=1000)}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
