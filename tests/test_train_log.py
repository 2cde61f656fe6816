"""train.log in the run directory (the console's lines with timestamps), the progress lines and their ETA, and the
TensorBoard layout that keeps the step-axis curves apart from the epoch-axis ones."""

from __future__ import annotations

import io
import json
import logging
import re
import sys

import pytest
from cli_helpers import ctrl_c_at_step, write_config, write_corpus

from torchlingo import logs
from torchlingo.cli import main
from torchlingo.config import Config
from torchlingo.tracking import RunLogger, format_duration, tensorboard_layout

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (INFO|WARNING|ERROR) (.*)$")


def messages(path) -> list[str]:
    """The message part of each train.log line; every line must carry the timestamp and level."""
    lines = path.read_text(encoding="utf-8").splitlines()
    assert all(STAMP.match(line) for line in lines), lines
    return [STAMP.match(line).group(2) for line in lines]


def file_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger("torchlingo").handlers if isinstance(h, logs.LineFileHandler)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny `torchlingo train` (2 epochs of 5 steps, log_interval 1): (run directory, its stderr)."""
    root = write_corpus(tmp_path_factory.mktemp("trainlog"))
    err, saved = io.StringIO(), sys.stderr
    sys.stderr = err
    try:
        assert main(["train", str(write_config(root, test_file=None))]) == 0
    finally:
        sys.stderr = saved
    return root / "runs" / "tiny", err.getvalue()


def test_train_log_holds_the_console_lines_with_timestamps(run):
    run_dir, stderr = run
    logged = messages(run_dir / "train.log")
    assert logged == stderr.splitlines()  # the same lines, in the same order
    steps = json.loads((run_dir / "metrics.json").read_text())["steps"]
    progress = [m for m in logged if re.match(r"epoch \d/2 \| step \d+ \| loss ", m)]
    assert [int(re.search(r"step (\d+)", m).group(1)) for m in progress] == list(range(1, steps + 1))
    assert all(re.search(r"\| [\d,]+ tok/s \| ETA \d+s$", m) for m in progress), progress
    assert progress[0].startswith("epoch 1/2 | step 1 |") and progress[-1].startswith(f"epoch 2/2 | step {steps} |")
    assert progress[-1].endswith("| ETA 0s")  # nothing left to train
    assert sum(m.startswith(("epoch 1 | step ", "epoch 2 | step ")) for m in logged) == 2  # the epoch summaries
    assert file_handlers() == []  # removed (and closed) when the run ended


def test_resume_appends_to_train_log_after_a_resumed_from_line(tmp_path, capsys):
    """Ctrl-C at step 5 (last.pt at step 4): the lines up to there are in train.log; --resume keeps them and goes on."""
    root = write_corpus(tmp_path)
    config = write_config(root, "cut", checkpoint_interval=2, test_file=None)
    with ctrl_c_at_step(5):
        assert main(["train", str(config)]) == 130
    log_file = root / "runs" / "cut" / "train.log"
    first = log_file.read_text(encoding="utf-8")
    assert "| step 4 | loss" in first and "| step 5 |" not in first  # step 5 was cut before it was logged
    assert first.splitlines()[-1].endswith(" ERROR stopped: KeyboardInterrupt")  # how the session ended
    assert "stopped: " not in capsys.readouterr().err  # the console has the CLI's own line instead
    assert main(["train", str(config), "--resume"]) == 0
    whole = log_file.read_text(encoding="utf-8")
    assert whole.startswith(first)
    later = messages(log_file)[len(first.splitlines()) :]
    resumed = [i for i, m in enumerate(later) if m.startswith("resumed from step 4 (epoch 1, batch 4) of ")]
    assert len(resumed) == 1
    steps = [int(re.search(r"\| step (\d+) \| loss", m).group(1)) for m in later if "| loss " in m]
    assert steps == list(range(5, 11))  # 2 epochs of 5 steps: the resumed session logs 5 .. 10
    assert resumed[0] < next(i for i, m in enumerate(later) if "| step 5 | loss" in m)
    assert file_handlers() == []


def test_a_second_run_in_the_process_writes_only_its_own_log(run, tmp_path, capsys):
    run_dir, _ = run
    before = (run_dir / "train.log").read_bytes()
    root = write_corpus(tmp_path)
    assert main(["train", str(write_config(root, "second", num_epochs=1, test_file=None))]) == 0
    assert (run_dir / "train.log").read_bytes() == before  # the first run's file was closed, not written again
    logged = messages(root / "runs" / "second" / "train.log")
    assert len([m for m in logged if m.startswith("epoch 1 | step ")]) == 1  # one handler: each line once


def test_a_new_run_starts_a_fresh_train_log(tmp_path, capsys):
    """An attempt that stopped before its first checkpoint is started over, and so is its train.log."""
    root = write_corpus(tmp_path)
    run_dir = root / "runs" / "again"
    run_dir.mkdir(parents=True)
    (run_dir / "torchlingo.lock").write_text("")
    (run_dir / "train.log").write_text("2026-01-01 00:00:00 INFO from the attempt before\n")
    assert main(["train", str(write_config(root, "again", num_epochs=1, test_file=None))]) == 0
    assert "from the attempt before" not in (run_dir / "train.log").read_text()


def test_each_record_is_one_whole_write(tmp_path, monkeypatch):
    """A line (even a multi-line message) reaches the file in one os.write ending in a newline: a crash can cut
    only the line being written."""
    writes, write = [], logs.os.write
    monkeypatch.setattr(logs.os, "write", lambda fd, data: writes.append(data) or write(fd, data))
    log = logging.getLogger("torchlingo")
    saved = log.level
    log.setLevel(logging.INFO)
    try:
        with logs.log_to_file(tmp_path / "train.log", append=False):
            log.info("first")
            log.warning("two\nlines é")
        log.info("after the block")  # not written: the handler is gone
    finally:
        log.setLevel(saved)
    assert [w.decode().split(" ", 2)[2] for w in writes] == ["INFO first\n", "WARNING two\nlines é\n"]
    assert (tmp_path / "train.log").read_bytes() == b"".join(writes)


def test_progress_line_with_a_step_budget_and_eta():
    """max_steps 1500 ends a 10-epoch plan of 200 steps an epoch in epoch 8: `epoch 3/8 | step 1200/1500`. 1,200
    steps in 1,008 s is 0.84 s a step; 300 steps left: 252 s."""
    config = Config(num_epochs=10, max_steps=1500, use_tensorboard=False, progress_bar=False)
    logger = RunLogger(config, start_step=0, total_steps=1500, steps_per_epoch=200)
    logger._start_time = 0.0
    line = logger.progress_line(1200, 2.34567, 1e-3, 9291.4, epoch=3, now=1008.0)
    assert line == "epoch 3/8 | step 1200/1500 | loss 2.3457 | lr 1.00e-03 | 9,291 tok/s | ETA 4m12s"
    unbounded = RunLogger(config.replace(max_steps=None), start_step=1000, total_steps=2000, steps_per_epoch=200)
    unbounded._start_time = 0.0  # resumed at step 1000: 200 steps this session in 100 s, 800 left: 400 s
    assert unbounded.progress_line(1200, 2.0, 1e-3, 10.0, epoch=7, now=100.0).startswith("epoch 7/10 | step 1200 |")
    assert unbounded.progress_line(1200, 2.0, 1e-3, 10.0, epoch=7, now=100.0).endswith("| ETA 6m40s")


@pytest.mark.parametrize("seconds, text", [(0.4, "0s"), (42, "42s"), (252, "4m12s"), (3600 + 125, "1h02m")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_on_a_terminal_the_bar_shows_progress_and_the_file_keeps_the_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    log = logging.getLogger("torchlingo")
    saved = log.level, log.propagate, list(log.handlers)
    try:
        logs.log_to_stderr()
        with logs.log_to_file(tmp_path / "train.log", append=False):
            logger = RunLogger(Config(use_tensorboard=False, num_epochs=2), 0, total_steps=10, steps_per_epoch=5)
            assert logger.bar is not None
            logger.log_train(5, 2.5, 1e-3, 100, epoch=1)
            logger.epoch_summary(1, 5, 2.5, 2.4, 1e-3)
            logger.epoch_summary(2, 10, 2.0, 1.9, 1e-3, {"bleu": 31.456, "chrf": 55.0})
            logger.close()
    finally:
        log.handlers[:] = saved[2]
        log.setLevel(saved[0])
        log.propagate = saved[1]
    console = sys.stderr.getvalue()
    assert "epoch 1 | step 5 | train loss 2.5000 | val loss 2.4000 | lr" in console
    assert "epoch 2 | step 10 | train loss 2.0000 | val loss 1.9000 | val bleu 31.46 | val chrf 55.00 | lr" in console
    assert "epoch 1/2 | step 5 | loss" not in console  # the bar shows it
    logged = messages(tmp_path / "train.log")
    assert logged[0].startswith("epoch 1/2 | step 5 | loss 2.5000 |") and logged[1].startswith("epoch 1 | step 5 |")


def test_tensorboard_layout_puts_the_epoch_curves_in_their_own_section(run):
    """The Custom Scalars layout written into the run: step-axis and epoch-axis curves in separate sections, each
    chart naming tags the run logged; the Scalars tab keeps exactly the seed's tags."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2

    run_dir, _ = run
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    proto = events.Tensors("custom_scalars__config__")[-1].tensor_proto.string_val[0]
    layout = layout_pb2.Layout.FromString(proto)
    sections = {c.title: {chart.title: list(chart.multiline.tag) for chart in c.chart} for c in layout.category}
    expected = tensorboard_layout(Config(eval_bleu=False))
    assert sections == {title: {k: v[1] for k, v in charts.items()} for title, charts in expected.items()}
    scalars = set(events.Tags()["scalars"])
    assert scalars == {"train/loss", "train/learning_rate", "train/epoch_loss", "val/loss", "val/epoch_loss"}
    by_axis = {title: {t.strip("^$") for tags in charts.values() for t in tags} for title, charts in sections.items()}
    assert by_axis["x axis: epoch"] == {"train/epoch_loss", "val/epoch_loss"}
    assert by_axis["x axis: optimizer step"] | by_axis["x axis: epoch"] == scalars
    assert [e.step for e in events.Scalars("train/epoch_loss")] == [1, 2]  # x axis: epoch
    assert "BLEU, chrF (val)" in tensorboard_layout(Config(eval_bleu=True))["x axis: optimizer step"]


def test_an_error_that_ends_the_run_is_the_last_line_of_the_file_only(tmp_path, capsys):
    """The CLI prints the error line itself; train.log notes it too (first line only), so it says how the run ended."""
    from torchlingo.errors import DataError

    logs.log_to_stderr()
    with pytest.raises(DataError), logs.log_to_file(tmp_path / "train.log", append=False):
        raise DataError("data/val.tsv:3: expected 2 tab-separated columns\nsecond line")
    assert messages(tmp_path / "train.log") == ["stopped: data/val.tsv:3: expected 2 tab-separated columns"]
    assert capsys.readouterr().err == ""
    assert file_handlers() == []
