"""One whole experiment, as `torchlingo train` runs it: tokenizer, data, model, training, test translation, scores.

Everything of the run goes to `config.run_dir`: the resolved `config.yaml`, the tokenizer files, `checkpoints/`,
TensorBoard events, `test.hyp` and `metrics.json`. Python users can call `run_experiment(config)` directly.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from . import distributed
from .checkpoint import find_resumable
from .config import Config
from .data_processing import NMTDataset, load_vocab, make_loader
from .errors import ConfigError, TorchlingoError
from .files import write_json, write_lines
from .models import SimpleTransformer
from .runtime import resolve_device, seed_everything
from .training import TrainResult, train_model

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
    "max_positions",
)
# What a run that got anywhere leaves behind; a new run refuses to write over these (a run that stopped before its
# first checkpoint left nothing worth keeping, and is started over).
RUN_MARKERS = ("checkpoints", "metrics.json")


def tokenizer_files(config: Config) -> tuple[str, str]:
    """File names of the source and target tokenizer in the run directory (the same file for a joint model)."""
    if config.tokenizer == "word":
        return "src_vocab.txt", "tgt_vocab.txt"
    if config.joint_vocab:
        return "spm.model", "spm.model"
    return "src_spm.model", "tgt_spm.model"


def prepare_run_dir(config: Config, resume: bool, overwrite: bool = False) -> Path:
    """Check the run directory fits the request: a new run needs it empty (or `overwrite`), a resume needs last.pt."""
    run_dir = config.run_dir
    last = run_dir / "checkpoints" / "last.pt"
    if resume:
        if not _has_checkpoints(run_dir):
            raise TorchlingoError(f"{last}: no checkpoint to resume from; start the run without --resume")
        _check_resume_config(config, run_dir / "config.yaml")
        return run_dir
    existing = [name for name in RUN_MARKERS if (run_dir / name).exists()]
    if "checkpoints" in existing and not _has_checkpoints(run_dir):
        existing.remove("checkpoints")  # created by the start-up write check of a run killed before its first save
    if existing and not overwrite:
        hint = "continue it with --resume, " if last.is_file() else ""
        raise TorchlingoError(
            f"{run_dir}: holds an earlier run ({', '.join(existing)}); {hint}choose another "
            "experiment_name (--set experiment_name=NAME), or pass --overwrite to delete it"
        )
    if existing:
        log.info("deleting the earlier run in %s (--overwrite)", run_dir)
        shutil.rmtree(run_dir)
    for stale in run_dir.glob("events.out.tfevents.*"):  # curves of an attempt that never saved a checkpoint
        stale.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _has_checkpoints(run_dir: Path) -> bool:
    return any((run_dir / "checkpoints").glob("*.pt"))


def _check_resume_config(config: Config, saved_path: Path) -> None:
    """A resume may change the budget (max_steps, num_epochs, ...) but not the tokenizer or the model's shape."""
    try:
        saved = Config.from_yaml(saved_path).to_dict(grouped=False)
    except TorchlingoError:
        return  # an unreadable saved config is replaced; the checkpoint itself still has to load
    now = config.to_dict(grouped=False)
    for key in FIXED_ON_RESUME:
        if saved[key] != now[key]:
            raise ConfigError(
                f"{key}: the run in {saved_path.parent} used {saved[key]!r}, now {now[key]!r}; "
                "a resumed run must keep its tokenizer and model shape"
            )
    changed = [k for k in now if now[k] != saved[k]]
    if changed:
        log.info("resuming with changed settings: %s", ", ".join(f"{k}={now[k]!r} (was {saved[k]!r})" for k in changed))


def build_tokenizers(config: Config, run_dir: Path, train: NMTDataset | None = None):
    """Load the run's tokenizer files if they exist (resume), else save the ones `train` built from its text."""
    src_name, tgt_name = tokenizer_files(config)
    if train is None:
        return load_vocab(run_dir / src_name), load_vocab(run_dir / tgt_name)
    train.src_vocab.save(run_dir / src_name)
    train.tgt_vocab.save(run_dir / tgt_name)
    return train.src_vocab, train.tgt_vocab


def run_experiment(config: Config, resume: bool = False, overwrite: bool = False) -> dict:
    """Train (or resume) the run described by `config`, translate its test set, and return metrics.json's contents."""
    if not config.train_file:
        raise ConfigError("train_file: must be set to train (a TSV file, or a prefix with src_lang/tgt_lang)")
    distributed.setup(resolve_device(config.device))  # under torchrun: join the process group; else nothing
    distributed.wait_for_writer()  # rank 0 prepares the run directory and the tokenizer, the other ranks read them
    run_dir = prepare_run_dir(config, resume, overwrite) if distributed.is_writer() else config.run_dir
    # last.pt, or the newest readable checkpoint when last.pt is damaged (find_resumable says so).
    resume_from = find_resumable(run_dir / "checkpoints") if resume else None
    if resume or not distributed.is_writer():
        src_vocab, tgt_vocab = build_tokenizers(config, run_dir)
        train = NMTDataset(config.train_file, src_vocab, tgt_vocab, config, max_len=config.max_len)
    else:
        log.info("reading %s and training the %s tokenizer", config.train_file, config.tokenizer)
        train = NMTDataset(config.train_file, config=config, max_len=config.max_len)
        src_vocab, tgt_vocab = build_tokenizers(config, run_dir, train)
    distributed.writer_ready()
    val = NMTDataset(config.val_file, src_vocab, tgt_vocab, config) if config.val_file else None
    # The test set is read now so that a bad test file stops the run before training, not after it.
    test = NMTDataset(config.test_file, src_vocab, tgt_vocab, config) if config.test_file else None
    if distributed.is_writer():
        config.to_yaml(run_dir / "config.yaml")
    log.info(
        "data: %d training pairs, %s validation pairs; vocabularies %d (source), %d (target)",
        len(train),
        len(val) if val is not None else "no",
        len(src_vocab),
        len(tgt_vocab),
    )
    seed_everything(config.seed)  # the initial weights follow config.seed, whatever ran before in this process
    model = SimpleTransformer(len(src_vocab), len(tgt_vocab), config=config)
    log.info("model: %.2fM parameters; run directory %s", sum(p.numel() for p in model.parameters()) / 1e6, run_dir)
    result = train_model(
        model,
        make_loader(train, config, shuffle=True),
        make_loader(val, config, shuffle=False) if val is not None else None,
        config,
        resume_from=resume_from,
    )
    metrics = _train_metrics(result, resume)
    if not distributed.is_writer():
        return metrics  # rank 0 translates the test set and writes metrics.json
    if test is not None:
        metrics.update(evaluate_test_set(config, result, test, run_dir, model))
    write_json(run_dir / "metrics.json", metrics)
    return metrics


def _train_metrics(result: TrainResult, resumed: bool) -> dict:
    return {
        "steps": result.steps,
        "epochs": result.epochs,
        "best_step": result.best_step,
        "best_val_loss": result.best_val_loss if result.history else None,
        "train_time_s": round(result.train_time, 2),
        "tokens_per_second": round(result.tokens_per_second, 1),
        "resumed": resumed,
        "stopped_early": result.stopped_early,
    }


def evaluate_test_set(config: Config, result: TrainResult, test: NMTDataset, run_dir: Path, model=None) -> dict:
    """Translate the test set with the best checkpoint (beam from the config), write test.hyp, score it.

    Without checkpoints (`save_checkpoints: false`) the model as training left it is used."""
    from .decoding import Translator, decoding_settings
    from .evaluation import score_corpus

    settings = decoding_settings(config)
    candidates = [
        result.best_checkpoint,
        result.last_checkpoint,
        run_dir / "checkpoints" / "best.pt",
        run_dir / "checkpoints" / "last.pt",
    ]
    checkpoint = next((Path(c) for c in candidates if c is not None and Path(c).is_file()), None)
    if checkpoint is not None:
        translator = Translator.from_checkpoint(checkpoint, device=config.device, **settings)
    elif model is not None:
        translator = Translator(
            model, test.src_vocab, test.tgt_vocab, device=str(next(model.parameters()).device), **settings
        )
    else:
        raise TorchlingoError(f"{run_dir / 'checkpoints'}: no checkpoint to translate the test set with")
    log.info(
        "translating %d test sentences with %s (beam %d)",
        len(test.src_texts),
        checkpoint or "the final model",
        config.beam_size,
    )
    hyps = translator.translate(test.src_texts)
    write_lines(run_dir / "test.hyp", hyps)
    scores = score_corpus(hyps, test.tgt_texts, metrics=("bleu", "chrf"))
    return {
        "test_file": str(config.test_file),
        "test_checkpoint": str(checkpoint) if checkpoint else None,
        "test_sentences": len(hyps),
        **{f"test_{k}": v for k, v in scores.items()},
    }
