"""What a resume checks against the checkpoint it resumes: the checkpoint, not the files beside it, is the truth.

Every checkpoint stores `run_info` (see `build_run_info`): what the run's position in its data depends on, namely
the training files' fingerprints (bytes, lines, SHA-256), the batching settings and each tokenizer's hash. A resume
continues at batch N of epoch E; with other data or other batching that batch is another one, and the run would
silently train on a different sequence of batches. So a change is an error unless it is accepted, which keeps the
weights and restarts epoch E with the new data (`train_model(..., restart_epoch=True)`).
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, cast

from .config import Config
from .data_processing.vocab import load_vocab, vocab_from_state, vocab_hash
from .errors import ConfigError, DataError, TorchlingoError, first_line
from .rundir import tokenizer_files

if TYPE_CHECKING:
    from .data_processing.dataset import NMTDataset
    from .data_processing.shards import ShardedDataset
    from .data_processing.vocab import SentencePieceVocab, Vocab

log = logging.getLogger("torchlingo")

# Keys that fix the tokenizer or the model's shape: a resumed run must keep them.
FIXED_ON_RESUME = (
    "tokenizer",
    "sp_model_type",
    "vocab_size",
    "joint_vocab",
    "min_freq",
    "max_vocab_size",
    "src_lang",
    "tgt_lang",
    "d_model",
    "n_heads",
    "num_encoder_layers",
    "num_decoder_layers",
    "d_ff",
    "tie_embeddings",
    "share_all_embeddings",
    "max_positions",
)
# Settings that decide which pairs are kept and how they are cut into batches (with the data and the tokenizers).
BATCHING_KEYS = ("max_tokens", "batch_size", "max_len", "seed", "bad_lines")
ACCEPT_FLAG = "--accept-data-change"


def build_run_info(config: Config, train: NMTDataset | ShardedDataset) -> dict:
    """The record stored in every checkpoint of the run (plain values): data, batching, tokenizers."""
    return {
        "corpus": [dict(f) for f in train.fingerprint],
        "train_pairs": len(train),
        "batching": {key: getattr(config, key) for key in BATCHING_KEYS},
        "tokenizers": {"src": vocab_hash(train.src_vocab), "tgt": vocab_hash(train.tgt_vocab)},
    }


def check_config(config: Config, state: dict, checkpoint: Path) -> None:
    """A resume may change the budget (max_steps, num_epochs, ...) but not the tokenizer or the model's shape, as
    the checkpoint's own stored config records them."""
    saved = state["config"] if isinstance(state.get("config"), dict) else {}
    now = config.to_dict(grouped=False)
    run_dir = checkpoint.parent.parent
    for key in FIXED_ON_RESUME:
        if key in saved and saved[key] != now[key]:
            raise ConfigError(
                f"{key}: the run in {run_dir} used {saved[key]!r} (its checkpoint {checkpoint.name} says so), now "
                f"{now[key]!r}; a resumed run must keep its tokenizer and model shape"
            )
    changed = [k for k in now if k in saved and now[k] != _plain(saved[k])]
    if changed:
        log.info("resuming with changed settings: %s", ", ".join(f"{k}={now[k]!r} (was {saved[k]!r})" for k in changed))


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def resume_tokenizers(
    config: Config, run_dir: Path, state: dict, checkpoint: Path
) -> tuple[Vocab | SentencePieceVocab, Vocab | SentencePieceVocab]:
    """The checkpoint's vocabularies (what the model was trained with). A tokenizer file in the run directory that
    differs from them is an error; a missing one is written again from the checkpoint."""
    vocabs = []
    for side, name in zip(("src_vocab", "tgt_vocab"), tokenizer_files(config)):
        path = run_dir / name
        if not state.get(side):  # written by train_model from a dataset without vocabularies: the files are all
            vocabs.append(load_vocab(path))
            continue
        try:
            vocab = vocab_from_state(state[side])
        except (TorchlingoError, KeyError, TypeError) as e:
            raise TorchlingoError(f"{checkpoint}: its {side} is damaged ({first_line(e)})") from None
        if path.exists():
            _check_same(path, vocab, checkpoint)
        else:
            log.warning("%s: missing; written again from %s", path, checkpoint)
            vocab.save(path)
        vocabs.append(vocab)
    return vocabs[0], vocabs[1]


def _check_same(path: Path, vocab: Vocab | SentencePieceVocab, checkpoint: Path) -> None:
    try:
        same = vocab_hash(load_vocab(path)) == vocab_hash(vocab)
        why = "differs from"
    except DataError as e:
        same, why = False, f"cannot be read ({first_line(e)}), so it cannot match"
    if not same:
        raise TorchlingoError(
            f"{path}: {why} the vocabulary stored in {checkpoint}, which the model was trained with; restore the "
            "file, or delete it to have it written again from the checkpoint"
        )


def check_data(state: dict, now: dict, checkpoint: Path, accept: bool) -> bool:
    """Compare the checkpoint's run_info with the data read now. Returns whether the epoch must restart (a change
    that was accepted); a change without `accept` is an error saying what changed and what to do."""
    saved = state.get("run_info") or {}
    if not saved.get("corpus"):
        log.warning("%s: records no fingerprint of its training data; resuming without checking the data", checkpoint)
        return False
    changes = describe_changes(saved, now)
    if not changes:
        return False
    position = state.get("position") or {}
    epoch, batch = int(position.get("epoch", 0)) + 1, int(position.get("batch", 0))
    if not accept:
        raise TorchlingoError(
            f"{checkpoint}: the training data changed since this checkpoint ({'; '.join(changes)}); its position "
            f"(epoch {epoch}, batch {batch}) belongs to the old data; start a new run (--set experiment_name=NAME, "
            f"or --overwrite), or pass {ACCEPT_FLAG} to keep the weights and restart epoch {epoch} with the new data"
        )
    log.warning("%s: %s accepted (%s); restarting epoch %d", checkpoint, ACCEPT_FLAG, "; ".join(changes), epoch)
    return True


def describe_changes(saved: dict, now: dict) -> list[str]:
    """What differs between two run_info records, in words."""
    changes = []
    for old, new in itertools.zip_longest(saved.get("corpus", []), now.get("corpus", [])):
        if _content(old) != _content(new):  # by content: a moved or renamed corpus is the same corpus
            changes.append(_file_change(old, new))
    for key, value in now.get("batching", {}).items():
        before = saved.get("batching", {}).get(key, value)
        if before != value:
            changes.append(f"{key} {before!r} -> {value!r}")
    for side, value in now.get("tokenizers", {}).items():
        if saved.get("tokenizers", {}).get(side, value) != value:
            changes.append(f"the {side} tokenizer")
    if not changes and saved.get("train_pairs") != now.get("train_pairs"):
        changes.append(f"{saved.get('train_pairs')} -> {now.get('train_pairs')} training pairs")
    return changes


def _content(entry: dict | None) -> tuple | None:
    return None if entry is None else (entry.get("bytes"), entry.get("lines"), entry.get("sha256"))


def _file_change(old: dict | None, new: dict | None) -> str:
    if old is None or new is None:
        entry = cast(dict, new or old)  # zip_longest padded the shorter list: the other one is a record
        return f"{entry['file']} {'added' if old is None else 'gone'}"
    if (old["lines"], old["bytes"]) != (new["lines"], new["bytes"]):
        return f"{new['file']}: {old['lines']} -> {new['lines']} lines, {old['bytes']} -> {new['bytes']} bytes"
    return f"{new['file']}: same size, other content"
