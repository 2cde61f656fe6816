"""The experiment configuration: one typed dataclass, validated when it is built, read from and written to YAML.

Every field is declared once below with its type, default, YAML group and a one-line doc; the validation, the
YAML grouping and the CLI's `--set` all read those declarations.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, first_line
from .files import write_text
from .rundir import check_run_name

GROUPS = ("data", "model", "training", "decoding", "logging")
SCHEDULERS = ("cosine", "plateau", "transformer", "noam", "none")
AMP_MODES = ("auto", "none", "bf16", "fp16")
QUANTIZE_MODES = ("none", "int8")


def _opt(
    group: str,
    default: Any,
    doc: str,
    *,
    choices: tuple = (),
    min: float | None = None,
    above: float | None = None,
    max: float | None = None,
) -> Any:
    """Declare a field: default, YAML group, doc, and the range checked at load time."""
    meta = {"group": group, "doc": doc, "choices": choices, "min": min, "above": above, "max": max}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    """All settings of an experiment. Build it in Python (`Config(batch_size=32)`) or from YAML (`Config.from_yaml`)."""

    # -- data ---------------------------------------------------------------------------------------------
    train_file: str | None = _opt(
        "data", None, "Training data: a two-column TSV, or a prefix PATH with PATH.src_lang / PATH.tgt_lang."
    )
    val_file: str | None = _opt("data", None, "Validation data, same forms as train_file.")
    test_file: str | None = _opt(
        "data", None, "Test data translated and scored after training, same forms as train_file."
    )
    src_lang: str | None = _opt("data", None, "Source language suffix for parallel text files (train.de).")
    tgt_lang: str | None = _opt("data", None, "Target language suffix for parallel text files (train.en).")
    tokenizer: str = _opt(
        "data",
        "sentencepiece",
        "Subword model: sentencepiece, or word for whitespace/punctuation words.",
        choices=("sentencepiece", "word"),
    )
    sp_model_type: str = _opt("data", "unigram", "SentencePiece algorithm.", choices=("unigram", "bpe"))
    vocab_size: int = _opt("data", 8000, "SentencePiece vocabulary size (an upper bound on small corpora).", min=8)
    joint_vocab: bool = _opt("data", True, "One vocabulary shared by source and target (SentencePiece only).")
    min_freq: int = _opt("data", 1, "Word vocabularies keep words seen at least this often.", min=1)
    max_vocab_size: int | None = _opt(
        "data", None, "Word vocabularies keep at most this many entries (specials included).", min=5
    )
    max_len: int | None = _opt(
        "data",
        None,
        "Training pairs with a side longer than this many tokens are left out (and counted); null: the longest the "
        "model takes (max_positions - 2, for <s> and </s>). Set, max_len + 2 must fit in max_positions.",
        min=1,
    )
    bad_lines: str = _opt(
        "data",
        "error",
        "Malformed corpus lines (and pairs longer than max_positions allows): error stops with file and line, skip "
        "drops and reports them.",
        choices=("error", "skip"),
    )
    batch_size: int = _opt("data", 32, "Sentences per batch when max_tokens is 0.", min=1)
    max_tokens: int = _opt(
        "data", 0, "Token budget per batch (padded size of the longer side); 0 uses batch_size.", min=0
    )
    num_workers: int = _opt("data", 0, "DataLoader worker processes.", min=0)
    prepared_data: str = _opt(
        "data",
        "off",
        "Training data read from prepared shards (token ids memory-mapped from disk, for corpora bigger than "
        "memory): auto prepares them when missing or stale and reuses them otherwise; off reads and tokenizes the "
        "text in memory.",
        choices=("off", "auto"),
    )
    data_dir: str | None = _opt(
        "data",
        None,
        "Where prepared shards live (null: the run directory's data/); a shared directory serves several runs with "
        "the same corpus and tokenizer settings.",
    )
    prepare_workers: int = _opt("data", 1, "Worker processes that encode the corpus when preparing shards.", min=1)
    sp_sample_size: int = _opt(
        "data",
        2_000_000,
        "SentencePiece trains on at most this many sentences (a random sample seeded by seed when the corpus "
        "has more).",
        min=1000,
    )

    # -- model --------------------------------------------------------------------------------------------
    d_model: int = _opt("model", 256, "Width of embeddings and hidden states.", min=1)
    n_heads: int = _opt("model", 4, "Attention heads; must divide d_model.", min=1)
    num_encoder_layers: int = _opt("model", 3, "Encoder layers.", min=1)
    num_decoder_layers: int = _opt("model", 3, "Decoder layers.", min=1)
    d_ff: int = _opt("model", 1024, "Hidden width of the feed-forward blocks.", min=1)
    dropout: float = _opt(
        "model", 0.1, "Dropout on embeddings and on each attention and feed-forward block's output.", min=0.0, max=0.99
    )
    activation_dropout: float = _opt(
        "model",
        0.0,
        "Dropout inside the feed-forward blocks, after the ReLU (off by default, as in fairseq and the original "
        "Transformer: it is 60% of the dropout work).",
        min=0.0,
        max=0.99,
    )
    attention_dropout: float = _opt(
        "model",
        0.0,
        "Dropout on attention weights (off by default, as in fairseq: one more random mask per attention call).",
        min=0.0,
        max=0.99,
    )
    tie_embeddings: bool = _opt("model", True, "Share the target embedding and the output projection.")
    share_all_embeddings: bool = _opt(
        "model",
        False,
        "Share the source embedding with the target embedding too (fairseq's --share-all-embeddings); needs one "
        "vocabulary for both sides (tokenizer: sentencepiece with joint_vocab: true).",
    )
    max_positions: int = _opt("model", 1024, "Longest sequence the positional encoding covers.", min=1)
    pad_idx: int = _opt("model", 0, "Padding id; fixed at 0 by every vocabulary (unk 1, bos 2, eos 3).", min=0, max=0)

    # -- training -----------------------------------------------------------------------------------------
    learning_rate: float = _opt("training", 5e-4, "Peak learning rate (after warmup).", above=0.0)
    optimizer: str = _opt("training", "adamw", "Optimizer.", choices=("adam", "adamw"))
    adam_betas: tuple = _opt("training", (0.9, 0.98), "Adam beta1, beta2.")
    adam_eps: float = _opt("training", 1e-9, "Adam epsilon.", above=0.0)
    weight_decay: float = _opt("training", 0.0, "Decoupled weight decay (AdamW); biases and norms are exempt.", min=0.0)
    label_smoothing: float = _opt("training", 0.1, "Label smoothing of the cross-entropy.", min=0.0, max=0.99)
    grad_clip: float = _opt("training", 1.0, "Clip the gradient norm to this; 0 disables.", min=0.0)
    accumulation_steps: int = _opt("training", 1, "Batches whose gradients are summed per optimizer step.", min=1)
    num_epochs: int = _opt("training", 10, "Passes over the training data (max_steps stops earlier).", min=1)
    max_steps: int | None = _opt("training", None, "Stop after this many optimizer steps.", min=1)
    scheduler_type: str = _opt("training", "cosine", "Learning-rate schedule.", choices=SCHEDULERS)
    warmup_steps: int = _opt("training", 1000, "Linear warmup steps (cosine, transformer/noam).", min=0)
    min_lr_ratio: float = _opt("training", 0.0, "Cosine decays to learning_rate * min_lr_ratio.", min=0.0, max=1.0)
    scheduler_patience: int = _opt(
        "training", 3, "Plateau: validations without improvement before the LR is cut.", min=0
    )
    scheduler_factor: float = _opt("training", 0.5, "Plateau: factor the LR is multiplied by.", above=0.0, max=1.0)
    val_interval: int = _opt("training", 0, "Validate every this many optimizer steps (0: only at epoch ends).", min=0)
    patience: int = _opt(
        "training", 0, "Early stopping after this many validations without improvement (0: off).", min=0
    )
    early_stopping_metric: str = _opt(
        "training", "loss", "What best.pt and early stopping follow.", choices=("loss", "bleu")
    )
    checkpoint_interval: int = _opt(
        "training", 0, "Also write last.pt every this many optimizer steps (0: epoch ends).", min=0
    )
    max_bad_steps: int = _opt(
        "training",
        5,
        "Stop after this many optimizer steps in a row with a NaN or infinite loss (each is skipped).",
        min=1,
    )
    save_checkpoints: bool = _opt("training", True, "Write best.pt and last.pt to the run directory.")
    keep_checkpoints: int = _opt(
        "training",
        0,
        "Also keep the last N checkpoints named by step (checkpoints/step_000120.pt), written with last.pt (0: none).",
        min=0,
    )
    average_last: int = _opt(
        "training",
        0,
        "Also score the test set with the average of the last N step checkpoints (needs keep_checkpoints >= N).",
        min=0,
    )
    seed: int = _opt("training", 42, "Seed for weights, dropout and batch order.", min=0, max=2**63 - 1)
    device: str = _opt("training", "auto", "auto, cpu, cuda, cuda:N or mps.")
    amp: str = _opt(
        "training",
        "auto",
        "Precision of training (autocast) and decoding: auto (bf16 where the hardware runs it fast), none (fp32), "
        "bf16, fp16 (CUDA).",
        choices=AMP_MODES,
    )
    num_threads: int | None = _opt("training", None, "CPU threads for torch (None: torch's default).", min=1)
    compile: bool = _opt(
        "training", False, "torch.compile the encoder-decoder forward of training (the fused loss stays eager)."
    )

    # -- decoding -----------------------------------------------------------------------------------------
    beam_size: int = _opt("decoding", 5, "Beam width for translation (1 is greedy).", min=1)
    length_penalty: float = _opt("decoding", 0.6, "GNMT length-penalty alpha.", min=0.0)
    max_len_a: float = _opt(
        "decoding", 1.5, "Hypotheses stop at max_len_a * source length + max_len_b tokens.", min=0.0
    )
    max_len_b: int = _opt("decoding", 10, "See max_len_a.", min=1)
    eval_bleu: bool = _opt("decoding", False, "Also decode the validation set and log val/bleu and val/chrf.")
    eval_beam_size: int = _opt("decoding", 1, "Beam width used for BLEU during training.", min=1)
    bleu_samples: int = _opt(
        "decoding",
        3,
        "With eval_bleu: the first this many validation sentences (source, reference, translation) are logged to "
        "TensorBoard as val/translations at each validation; 0 logs none.",
        min=0,
    )
    decode_max_tokens: int = _opt(
        "decoding",
        4000,
        "Token budget per decoding batch: its padded source tokens times the rows each sentence decodes (beam_size "
        "in beam search, 1 greedy), so beam 5 batches hold 800 source tokens.",
        min=1,
    )
    decode_max_sentences: int | None = _opt(
        "decoding",
        None,
        "Sentences per decoding batch at most, besides decode_max_tokens (None: no limit).",
        min=1,
    )
    quantize: str = _opt(
        "decoding",
        "none",
        "CPU decoding: int8 stores the weights of the linear layers in int8 (PyTorch's dynamic quantization: each "
        "layer quantizes its input on the fly and returns fp32), the rest of the model in fp32 whatever amp says; "
        "none decodes in amp's precision.",
        choices=QUANTIZE_MODES,
    )
    decode_parallel_batches: int | None = _opt(
        "decoding",
        None,
        "CPU decoding: batches translated at once, each on its own share of the threads (None: one per thread, "
        "at most 4).",
        min=1,
    )

    # -- logging ------------------------------------------------------------------------------------------
    experiment_name: str = _opt(
        "logging",
        "experiment",
        "Run name: one directory name (not '.', '..' or a path); the run directory is tensorboard_dir/experiment_name.",
    )
    tensorboard_dir: str = _opt("logging", "runs", "Parent of all run directories.")
    use_tensorboard: bool = _opt("logging", True, "Write TensorBoard event files to the run directory.")
    log_interval: int = _opt(
        "logging", 100, "Log train/loss and train/learning_rate every this many optimizer steps.", min=1
    )
    progress_bar: bool = _opt("logging", True, "Show a progress bar when writing to a terminal.")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, _check(f, getattr(self, f.name)))
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"n_heads: {self.n_heads} does not divide d_model {self.d_model}; pick n_heads that divides it"
            )
        if (self.d_model // self.n_heads) % 2:
            raise ConfigError(
                f"n_heads: d_model / n_heads = {self.d_model // self.n_heads} must be even for sinusoidal positions"
            )
        if len(self.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise ConfigError(f"adam_betas: expected two numbers in [0, 1), got {list(self.adam_betas)}")
        if self.max_len is not None and self.max_len + 2 > self.max_positions:
            raise ConfigError(
                f"max_len: {self.max_len} tokens plus <s> and </s> do not fit in max_positions={self.max_positions}; "
                f"set max_len to at most {self.max_positions - 2} or raise max_positions"
            )
        if self.share_all_embeddings and not (self.tokenizer == "sentencepiece" and self.joint_vocab):
            raise ConfigError(
                "share_all_embeddings: needs one vocabulary for source and target; set tokenizer: sentencepiece "
                "and joint_vocab: true, or share_all_embeddings: false"
            )
        if self.average_last > self.keep_checkpoints:
            raise ConfigError(
                f"average_last: {self.average_last} needs keep_checkpoints >= {self.average_last} "
                f"(it is {self.keep_checkpoints}); set keep_checkpoints: {self.average_last}"
            )
        check_run_name(self.experiment_name)
        if self.scheduler_type == "noam":
            self.scheduler_type = "transformer"

    @property
    def train_max_len(self) -> int:
        """Longest side (in tokens) of a training pair that is kept: max_len, or what the positions allow."""
        return self.max_len if self.max_len is not None else self.max_positions - 2

    @property
    def run_dir(self) -> Path:
        """Where everything of this run goes: tensorboard_dir/experiment_name."""
        return Path(self.tensorboard_dir) / self.experiment_name

    # -- YAML ---------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict | None, source: str = "config", overrides: list[str] | None = None) -> Config:
        """Build from a (possibly grouped) mapping plus `KEY=VALUE` overrides; unknown keys get a did-you-mean."""
        flat = _flatten(values or {}, source)
        overridden = parse_overrides(overrides or [])
        flat.update(overridden)
        names = [f.name for f in dataclasses.fields(cls)]
        for k in flat:
            if k not in names:
                close = difflib.get_close_matches(k, names, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else "; see docs/configuration.md for the keys"
                where = f"--set {k}" if k in overridden else source  # an override's mistake is not the file's
                raise ConfigError(f"{where}: unknown key {k!r}{hint}")  # repr: a key may hold a newline
        try:
            return cls(**flat)
        except ConfigError as e:
            raise ConfigError(_blame(str(e), source, overridden)) from None

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> Config:
        """Read a YAML file, then apply `KEY=VALUE` overrides (values parsed as YAML)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read config ({e})") from None
        try:
            values = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
        except _DuplicateKey as e:
            raise ConfigError(f"{path}:{e.line}: {e}") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(
                f"{path}{where}: not valid YAML ({first_line(getattr(e, 'problem', None) or e)})"
            ) from None
        except RecursionError:
            raise ConfigError(f"{path}: not valid YAML (nested too deeply)") from None
        except (ValueError, TypeError, OverflowError) as e:  # a tag's constructor failed: `!!float abc`, `!!binary x`
            raise ConfigError(f"{path}: not valid YAML ({first_line(e)})") from None
        if values is None:  # an empty file (or only comments) is a lost or truncated config, not "all defaults"
            raise ConfigError(f"{path}: the config file is empty (no settings); write {{}} in it for all the defaults")
        return cls.from_dict(values, source=str(path), overrides=overrides)

    def to_dict(self, grouped: bool = True) -> dict:
        """Plain values, grouped by section for YAML (tuples become lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            value = list(value) if isinstance(value, tuple) else value
            if grouped:
                out.setdefault(f.metadata["group"], {})[f.name] = value
            else:
                out[f.name] = value
        return out

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The resolved config as YAML; written to `path` if given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
        if path is not None:
            write_text(path, text)
        return text

    def replace(self, **changes: Any) -> Config:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def _blame(message: str, source: str, overridden: dict[str, Any]) -> str:
    """Say where a bad value came from: `--set KEY` when the key the message names was overridden, else the file
    (and the overrides, which may have caused a check between two keys to fail)."""
    key = message.partition(":")[0]
    if key in overridden:
        return f"--set {message}"
    also = f" with --set {', '.join(overridden)}" if overridden else ""
    return f"{source}{also}: {message}"


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first: int, line: int):
        super().__init__(f"key {key!r} is given twice (lines {first} and {line}); keep one of them")
        self.line = line


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, except that a key given twice in one mapping (a second `training:` group, a repeated
    `seed:`) is an error instead of the last one silently winning. Keys brought in by a `<<` merge may be
    overridden, as YAML says."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _DuplicateKey(key, seen[key], line)
                    seen[key] = line
                except TypeError:  # an unhashable key: SafeLoader reports it below
                    continue
        return super().construct_mapping(node, deep=deep)


@functools.cache
def _hints() -> dict[str, Any]:
    """Config's resolved field types (computed once: get_type_hints re-evaluates every annotation)."""
    return typing.get_type_hints(Config)


def _flatten(values: Any, source: str) -> dict[str, Any]:
    """Merge the optional `data:` / `model:` / ... groups into one flat mapping; a key given twice is an error."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of keys to values, got {type(values).__name__}")
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if key in GROUPS and isinstance(value, dict):
            items = list(value.items())
        elif key in GROUPS and value is None:
            items = []
        else:
            items = [(key, value)]
        for k, v in items:
            if not isinstance(k, str):
                raise ConfigError(f"{source}: key {k!r} is not a name")
            if k in flat:
                raise ConfigError(f"{source}: key {k!r} is given twice")
            flat[k] = v
    return flat


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["training.lr=1", "batch_size=8"]` -> {"lr": 1, "batch_size": 8}; values are parsed as YAML scalars."""
    out = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        if "." in key:
            group, _, key = key.partition(".")
            if group not in GROUPS:
                raise ConfigError(f"--set {item!r}: unknown group '{group}' (one of {', '.join(GROUPS)})")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else None
        except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError):
            out[key] = raw  # not YAML (`!!float abc`, `[1,`): the raw text, which the field's type check judges
    return out


def _check(f: dataclasses.Field, value: Any) -> Any:
    """Coerce YAML-ish values to the field's type and check its range; errors name the field."""
    name, meta = f.name, f.metadata
    hint = _hints()[name]
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
    base = next((a for a in typing.get_args(hint) if a is not type(None)), hint) if optional else hint
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name}: must be set (a {base.__name__})")
    value = _coerce(name, base, value)
    if meta["choices"] and value not in meta["choices"]:
        close = difflib.get_close_matches(str(value), [str(c) for c in meta["choices"]], n=1)
        hint_text = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(map(str, meta['choices']))}{hint_text}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if meta["min"] is not None and value < meta["min"]:
            raise ConfigError(f"{name}: must be >= {meta['min']}, got {value}")
        if meta["above"] is not None and value <= meta["above"]:
            raise ConfigError(f"{name}: must be > {meta['above']}, got {value}")
        if meta["max"] is not None and value > meta["max"]:
            raise ConfigError(f"{name}: must be <= {meta['max']}, got {value}")
    return value


def _to_bool(value: Any) -> Any:
    return value if isinstance(value, bool) else None


def _to_int(value: Any) -> Any:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) else None


def _to_float(value: Any) -> Any:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
        try:
            value = float(value)
        except ValueError:
            return None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _to_str(value: Any) -> Any:
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # e.g. experiment_name: 2024
    return None


def _to_tuple(value: Any) -> Any:
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return tuple(float(v) for v in value)
    return None


_COERCE = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str, tuple: _to_tuple}


def _coerce(name: str, base: type, value: Any) -> Any:
    """`value` as the field's type (None from a converter means it does not convert); other types pass as they are."""
    if base not in _COERCE:
        return value
    converted = _COERCE[base](value)
    if converted is None:
        raise ConfigError(f"{name}: expected {_type_name(base)}, got {value!r} ({type(value).__name__})")
    return converted


def _type_name(base: type) -> str:
    return {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a non-empty string",
        tuple: "a list of numbers",
    }.get(base, base.__name__)


def describe_fields() -> list[tuple[str, str, str, Any, str]]:
    """(group, name, type, default, doc) for every field: the source of the config reference in docs/."""
    hints = typing.get_type_hints(Config)
    rows = []
    for f in dataclasses.fields(Config):
        # mypy cannot narrow default_factory from MISSING (a _MISSING_TYPE instance, not a type or a literal)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[operator]
        rows.append(
            (
                f.metadata["group"],
                f.name,
                getattr(hints[f.name], "__name__", str(hints[f.name])),
                default,
                f.metadata["doc"],
            )
        )
    return rows
