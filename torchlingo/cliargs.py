"""The `torchlingo` command's arguments: one sub-parser a command (`cli` runs them), the flags shared by translate
and evaluate, and the argparse types that turn a bad value into argparse's one-line usage error."""

from __future__ import annotations

import argparse

from . import __version__
from .config import AMP_MODES, QUANTIZE_MODES


def non_negative_float(text: str) -> float:
    """argparse type: a number >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0.0:  # NaN too
        raise argparse.ArgumentTypeError(f"{text!r} is not a number >= 0")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


# -- the parser --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchlingo", description="Train, run and score translation models.")
    parser.add_argument("--version", action="version", version=f"torchlingo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_prepare(sub)
    _add_translate(sub)
    _add_evaluate(sub)
    _add_average(sub)
    _add_export(sub)
    _add_download(sub)
    return parser


def _add_train(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("train", help="train a model as a YAML config says, then translate and score its test set")
    p.add_argument("config", help="YAML config (see configs/ and docs/configuration.md)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (value parsed as YAML); repeatable, e.g. --set max_steps=100",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume", action="store_true", help="continue the run in the run directory from checkpoints/last.pt"
    )
    mode.add_argument(
        "--overwrite", action="store_true", help="delete the earlier torchlingo run in the run directory first"
    )
    p.add_argument(
        "--accept-data-change",
        action="store_true",
        help="with --resume: go on although the training data or batching changed since the checkpoint "
        "(keeps the weights, restarts the checkpoint's epoch with the new data)",
    )


def _add_prepare(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("prepare", help="tokenize the training corpus into memory-mapped shards (for big corpora)")
    p.add_argument("config", help="YAML config; data_dir says where the shards go (default: run directory's data/)")
    p.add_argument("--workers", type=positive_int, default=None, help="encoding processes (default: prepare_workers)")
    p.add_argument("--force", action="store_true", help="prepare again even when the shards are up to date")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")


def _decoding_options(p: argparse.ArgumentParser, checkpoint_required: bool = True) -> None:
    model = p.add_mutually_exclusive_group(required=checkpoint_required)
    model.add_argument(
        "--checkpoint",
        action="append",
        help="a checkpoint written by training, e.g. runs/base/checkpoints/best.pt, or a run directory (runs/base) "
        "for its checkpoints/best.pt; repeat it to decode with an ensemble (the mean of the models' "
        "log-probabilities; the checkpoints must share their vocabularies)",
    )
    _engine_options(p, model)
    p.add_argument("--beam-size", type=positive_int, help="beam width (1 is greedy); default: the run's beam_size")
    p.add_argument(
        "--length-penalty",
        type=non_negative_float,
        metavar="ALPHA",
        help="beam search: GNMT length-penalty alpha (0: none; higher favours longer output); default: the run's "
        "length_penalty",
    )
    p.add_argument(
        "--max-tokens",
        type=positive_int,
        help="token budget per decoding batch: padded source tokens x beam size (default: the run's decode_max_tokens)",
    )
    p.add_argument(
        "--max-sentences",
        type=positive_int,
        help="sentences per decoding batch at most, besides --max-tokens (default: the run's decode_max_sentences, "
        "no limit); beam search decodes sentences x beams rows",
    )
    p.add_argument(
        "--parallel-batches",
        type=positive_int,
        help="CPU: batches decoded at once, each on its share of the threads (default: one per thread, at most 4)",
    )
    p.add_argument("--device", help="cpu, cuda, cuda:N, mps or auto")
    p.add_argument(
        "--amp",
        choices=AMP_MODES,
        help="decoding precision (none is fp32); default: the run's amp (auto: bf16 where it runs fast)",
    )
    p.add_argument(
        "--quantize",
        choices=QUANTIZE_MODES,
        help="CPU: int8 decodes with int8 linear layers (dynamic quantization; the rest in fp32); default: none",
    )


def _engine_options(p: argparse.ArgumentParser, model: argparse._MutuallyExclusiveGroup) -> None:
    """--engine, --model (in `model`, the group --checkpoint is in) and --compute-type."""
    from .export import QUANTIZATIONS

    p.add_argument(
        "--engine",
        choices=("torchlingo", "ctranslate2"),
        default="torchlingo",
        help="decode with torchlingo (--checkpoint) or with CTranslate2 (--model DIR, a `torchlingo export` folder)",
    )
    model.add_argument("--model", metavar="DIR", help="with --engine ctranslate2: the exported folder")
    p.add_argument(
        "--compute-type",
        choices=("default", "auto") + QUANTIZATIONS,
        help="with --engine ctranslate2: CTranslate2's compute type (default: the weights' type), e.g. int8",
    )


def _search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sampling",
        choices=("topk", "topp"),
        help="sample each token instead of searching: from the --top-k most probable, or the --top-p nucleus",
    )
    p.add_argument("--top-k", type=int, help="with --sampling topk: tokens to sample from (0: all; 1 is greedy)")
    p.add_argument("--top-p", type=float, help="with --sampling topp: probability mass of the nucleus (default 0.9)")
    p.add_argument("--temperature", type=float, help="with --sampling: divide the logits by this (default 1)")
    p.add_argument("--seed", type=int, help="with --sampling: random seed (default 0); the same seed, the same output")
    p.add_argument("--prefix", metavar="FILE", help="target prefixes, one a source line, every hypothesis starts with")


def _add_translate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("translate", help="translate one sentence a line (stdin to stdout by default)")
    _decoding_options(p)
    _search_options(p)
    p.add_argument("--input", help="source file: plain text, or a TSV (its source column) (default: stdin)")
    p.add_argument("--output", help="output file (default: stdout)")
    p.add_argument(
        "--n-best",
        type=positive_int,
        metavar="N",
        help="write the N best hypotheses of each sentence as index<TAB>score<TAB>text (needs --beam-size >= N)",
    )
    p.add_argument("--scores", action="store_true", help="write score<TAB>text (length-normalized log-probability)")
    p.add_argument("--json", action="store_true", help="write one JSON object a hypothesis: index, rank, score, text")


def _add_evaluate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("evaluate", help="translate a source file and score it against references (BLEU, chrF, TER)")
    _decoding_options(p, checkpoint_required=False)
    _search_options(p)
    p.add_argument(
        "--run",
        metavar="RUN_DIR",
        help="score a run's test set (test_file of RUN_DIR/config.yaml) with its checkpoints/best.pt",
    )
    p.add_argument("--src", help="source file: plain text, or a TSV (its source column) (default: stdin)")
    p.add_argument(
        "--ref",
        help="references aligned with --src: plain text, or a TSV (its target column); default: --src's target "
        "column when --src is a TSV",
    )
    p.add_argument("--output", help="also write the translations here")
    p.add_argument("--json", action="store_true", help="print the scores and signatures as JSON")


def _add_average(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("average", help="average the weights of several checkpoints into one (translate/evaluate it)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoints", nargs="+", metavar="PATH", help="the checkpoints to average")
    which.add_argument("--run", metavar="RUN_DIR", help="a run directory: average its newest step checkpoints")
    p.add_argument("--last", type=positive_int, metavar="N", help="with --run: how many step checkpoints")
    p.add_argument("--output", required=True, metavar="OUT.pt", help="the averaged checkpoint to write")


def _add_export(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .export import QUANTIZATIONS

    p = sub.add_parser("export", help="export a checkpoint to another runtime (CTranslate2)")
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by training (or by average)")
    p.add_argument("--format", choices=("ctranslate2",), default="ctranslate2", help="the target format")
    p.add_argument("--output", required=True, metavar="DIR", help="a new (or empty) folder for the model")
    p.add_argument("--quantization", choices=QUANTIZATIONS, help="CTranslate2 weight type (default: as trained)")


def _add_download(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("download", help="download a public corpus")
    corpora = p.add_subparsers(dest="corpus", required=True, metavar="CORPUS")
    m = corpora.add_parser("multi30k", help="Multi30k task 1 raw text (de, en, fr, cs)")
    m.add_argument("--dest", required=True, help="folder for the files, e.g. data/multi30k")
    m.add_argument("--langs", nargs="+", default=["de", "en"], help="languages (default: de en)")
    m.add_argument(
        "--splits",
        nargs="+",
        default=["train", "val", "test_2016_flickr"],
        help="splits (default: train val test_2016_flickr)",
    )
    m.add_argument("--base-url", help="mirror to download from (also TORCHLINGO_MULTI30K_URL); file:// works")
    m.add_argument("--overwrite", action="store_true", help="download files that already exist again")
