"""One whole experiment, as `torchlingo train` runs it: tokenizer, data, model, training, test translation, scores.

Everything of the run goes to `config.run_dir`: the resolved `config.yaml`, the tokenizer files, `checkpoints/`,
TensorBoard events, `train.log` (from the CLI), `test.hyp` and `metrics.json` (`rundir.py` says what may be there
and locks it; `runinfo.py` what a resume checks). Python users can call `run_experiment(config)` directly.
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

from . import distributed, environment, logs, rundir, runinfo
from .checkpoint import load_resumable
from .config import Config
from .data_processing import NMTDataset, load_vocab, make_loader
from .errors import ConfigError, TorchlingoError
from .files import write_json, write_lines
from .models import SimpleTransformer
from .rundir import tokenizer_files
from .runtime import resolve_device, seed_everything
from .training import TrainResult, train_model
from .unknowns import report_dataset

if TYPE_CHECKING:
    from .data_processing import SentencePieceVocab, Vocab
    from .data_processing.shards import ShardedDataset

log = logging.getLogger("torchlingo")


def save_tokenizers(
    config: Config, run_dir: Path, train: NMTDataset | ShardedDataset
) -> tuple[Vocab | SentencePieceVocab, Vocab | SentencePieceVocab]:
    """Save the tokenizers `train` built from its text in the run directory."""
    src_name, tgt_name = tokenizer_files(config)
    train.src_vocab.save(run_dir / src_name)
    train.tgt_vocab.save(run_dir / tgt_name)
    return train.src_vocab, train.tgt_vocab


def load_train_data(
    config: Config,
    src_vocab: Vocab | SentencePieceVocab | None = None,
    tgt_vocab: Vocab | SentencePieceVocab | None = None,
) -> NMTDataset | ShardedDataset:
    """The training set: read into memory (`prepared_data: off`), or prepared shards, reused when they fit the
    corpus and settings and prepared again otherwise (`auto`). The tokenizers are trained unless given."""
    if config.prepared_data == "auto":
        from .data_processing.prepare import open_or_prepare

        # src_vocab and tgt_vocab are given together (a resume's, or another rank's) or not at all
        return open_or_prepare(config, None if src_vocab is None else (src_vocab, tgt_vocab))  # type: ignore[arg-type]
    return NMTDataset(config.train_file, src_vocab, tgt_vocab, config, max_len=config.train_max_len)


def run_experiment(
    config: Config,
    resume: bool = False,
    overwrite: bool = False,
    accept_data_change: bool = False,
    train_log: bool = False,
) -> dict:
    """Train (or resume) the run described by `config`, translate its test set, and return metrics.json's contents.

    The run directory is locked for the whole call (a second process on it fails at once, naming this one).
    `accept_data_change` lets a resume go on with training data or batching other than the checkpoint's: the
    weights are kept and the checkpoint's epoch restarts with the new data. `train_log` (what `torchlingo train`
    does) also writes the torchlingo logger's lines to run_dir/train.log for this call: a new file for a new run,
    appended to on a resume. Under torchrun, rank 0 alone locks and prepares the run directory, writes train.log and
    the tokenizer; the other ranks wait for it, then read what it wrote."""
    if not config.train_file:
        raise ConfigError("train_file: must be set to train (a TSV file, or a prefix with src_lang/tgt_lang)")
    distributed.setup(resolve_device(config.device))  # under torchrun: join the process group; else nothing
    distributed.wait_for_writer()  # released by rank 0's writer_ready() in _run, once the tokenizer is written
    with contextlib.ExitStack() as stack:
        if distributed.is_writer():
            stack.enter_context(rundir.prepare(config, resume, overwrite))
            if train_log:  # opened once the directory is locked and checked (--overwrite has cleared it)
                stack.enter_context(logs.log_to_file(config.run_dir / logs.TRAIN_LOG, append=resume))
        return _run(config, config.run_dir, resume, accept_data_change)


def _training_data(
    config: Config, run_dir: Path, state: dict | None, resume_from: Path | None
) -> tuple[NMTDataset | ShardedDataset, Vocab | SentencePieceVocab, Vocab | SentencePieceVocab]:
    """(training set, source vocabulary, target vocabulary): a resume's come from its checkpoint; a new run's rank 0
    trains the tokenizer and saves it, and the other ranks read what it saved."""
    if state is not None:
        assert resume_from is not None  # the state was loaded from it
        runinfo.check_config(config, state, resume_from)
        src_vocab, tgt_vocab = runinfo.resume_tokenizers(config, run_dir, state, resume_from)
        train = load_train_data(config, src_vocab, tgt_vocab)
    elif distributed.is_writer():
        log.info("reading %s and training the %s tokenizer", config.train_file, config.tokenizer)
        train = load_train_data(config)
        src_vocab, tgt_vocab = save_tokenizers(config, run_dir, train)
    else:  # another rank of a new run: the tokenizer rank 0 has just written
        src_vocab, tgt_vocab = (load_vocab(run_dir / name) for name in tokenizer_files(config))
        train = load_train_data(config, src_vocab, tgt_vocab)
    return train, src_vocab, tgt_vocab


def _run(config: Config, run_dir: Path, resume: bool, accept_data_change: bool) -> dict:
    env = environment.describe(config)
    log.info("%s", environment.summary(env))
    # last.pt, or the newest readable checkpoint when last.pt is damaged (load_resumable says so).
    resume_from, state = load_resumable(run_dir / "checkpoints") if resume else (None, None)
    train, src_vocab, tgt_vocab = _training_data(config, run_dir, state, resume_from)
    distributed.writer_ready()
    run_info = runinfo.build_run_info(config, train)
    restart_epoch = (  # a state comes with the checkpoint it was loaded from
        state is not None
        and resume_from is not None
        and runinfo.check_data(state, run_info, resume_from, accept_data_change)
    )
    del state  # the weights are loaded again by train_model
    val = NMTDataset(config.val_file, src_vocab, tgt_vocab, config) if config.val_file else None
    # The test set is read now so that a bad test file stops the run before training, not after it.
    test = NMTDataset(config.test_file, src_vocab, tgt_vocab, config) if config.test_file else None
    if distributed.is_writer():
        for held_out in (d for d in (val, test) if d is not None):
            report_dataset(held_out)  # word vocabularies: how much of it is <unk>
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
    train_loader = make_loader(train, config, shuffle=True)
    if distributed.is_writer():
        warn_long_warmup(config, len(train_loader))
    result = train_model(
        model,
        train_loader,
        make_loader(val, config, shuffle=False) if val is not None else None,
        config,
        resume_from=resume_from,
        run_info=run_info,
        restart_epoch=restart_epoch,
    )
    metrics = {**_train_metrics(result, resume), "environment": env}
    if not distributed.is_writer():
        return metrics  # rank 0 translates the test set and writes metrics.json
    if test is not None:
        metrics.update(evaluate_test_set(config, result, test, run_dir, model))
        if config.average_last and config.save_checkpoints:
            metrics.update(evaluate_averaged(config, test, run_dir))
    write_json(run_dir / "metrics.json", metrics)
    return metrics


def warn_long_warmup(config: Config, batches_per_epoch: int) -> int | None:
    """Warn when the warmup is longer than the run (the learning rate would never reach learning_rate); returns the
    planned optimizer steps when it warned."""
    from .training import _planned_steps

    if config.scheduler_type not in ("cosine", "transformer") or not config.warmup_steps:
        return None
    planned = _planned_steps(batches_per_epoch, config)
    if config.warmup_steps <= planned:
        return None
    log.warning(
        "warmup_steps: %d is more than the %d optimizer steps this run is planned for (%s), so the learning rate "
        "never reaches learning_rate=%g; lower warmup_steps (e.g. to %d) or train longer",
        config.warmup_steps,
        planned,
        f"max_steps={config.max_steps}"
        if config.max_steps and config.max_steps <= planned
        else f"{config.num_epochs} epochs of {math.ceil(batches_per_epoch / config.accumulation_steps)} steps",
        config.learning_rate,
        max(1, planned // 10),
    )
    return planned


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


def evaluate_test_set(
    config: Config, result: TrainResult, test: NMTDataset, run_dir: Path, model: SimpleTransformer | None = None
) -> dict:
    """Translate the test set with the best checkpoint (beam from the config), write test.hyp, score it.

    Without checkpoints (`save_checkpoints: false`) the model as training left it is used."""
    from .evaluation import score_corpus
    from .translator import DecodingSettings, Translator

    settings = DecodingSettings.from_config(config)
    candidates = [
        result.best_checkpoint,
        result.last_checkpoint,
        run_dir / "checkpoints" / "best.pt",
        run_dir / "checkpoints" / "last.pt",
    ]
    checkpoint = next((Path(c) for c in candidates if c is not None and Path(c).is_file()), None)
    if checkpoint is not None:
        translator = Translator.from_checkpoint(checkpoint, settings, device=config.device)
    elif model is not None:
        translator = Translator(
            model, test.src_vocab, test.tgt_vocab, settings, device=str(next(model.parameters()).device)
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


def evaluate_averaged(config: Config, test: NMTDataset, run_dir: Path) -> dict:
    """`average_last: N`: average the run's N newest step checkpoints into averaged.pt (in the run directory, beside
    checkpoints/ so that a resume never picks it), translate the test set with it into test.averaged.hyp and score it:
    the same keys as evaluate_test_set with the suffix _averaged."""
    from .checkpoint import average_checkpoints, save_checkpoint, step_checkpoints
    from .evaluation import score_corpus
    from .translator import DecodingSettings, Translator

    paths = step_checkpoints(run_dir / "checkpoints")[-config.average_last :]
    if len(paths) < config.average_last:  # a short run saved fewer times than average_last
        log.warning(
            "average_last: %d, but the run kept %d step checkpoint(s); averaging those",
            config.average_last,
            len(paths),
        )
    if not paths:
        return {}
    averaged = save_checkpoint(average_checkpoints(paths), run_dir / "averaged.pt")
    translator = Translator.from_checkpoint(averaged, DecodingSettings.from_config(config), device=config.device)
    log.info("translating %d test sentences with the average of %d checkpoints", len(test.src_texts), len(paths))
    hyps = translator.translate(test.src_texts)
    write_lines(run_dir / "test.averaged.hyp", hyps)
    scores = score_corpus(hyps, test.tgt_texts, metrics=("bleu", "chrf"))
    return {
        "test_checkpoint_averaged": str(averaged),
        "test_averaged_from": [str(p) for p in paths],
        **{f"test_{k}_averaged": v for k, v in scores.items()},
    }
