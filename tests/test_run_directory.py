"""The run directory through `torchlingo train`: names that stay inside tensorboard_dir, `--overwrite` that only
deletes a torchlingo run, one process per run, and resumes that check what they resume."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from cli_helpers import REPO, ctrl_c_at_step, one_error_line, write_config, write_corpus

from torchlingo.cli import main
from torchlingo.tracking import RunLogger


@pytest.fixture
def root(tmp_path):
    return write_corpus(tmp_path)


def fails(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    return one_error_line(capsys.readouterr().err)


def interrupted_run(root, capsys, name: str = "cut", at_call: int = 5, **changes):
    """A run stopped by Ctrl-C during step `at_call` (last.pt every 2 steps: at step 4, mid-epoch 1)."""
    config = write_config(root, name, checkpoint_interval=2, test_file=None, **changes)
    with ctrl_c_at_step(at_call):
        assert main(["train", str(config)]) == 130
    capsys.readouterr()
    return config, root / "runs" / name


# -- names ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [".", "..", "../outside", "a/b", "ABSOLUTE", "x\\y"])
def test_experiment_name_cannot_leave_or_be_tensorboard_dir(root, capsys, name):
    name = str(root / "outside") if name == "ABSOLUTE" else name
    other = root / "runs" / "other"
    other.mkdir(parents=True)
    (other / "keep.txt").write_text("another run's file\n")
    message = fails(capsys, ["train", str(write_config(root)), "--overwrite", "--set", f"experiment_name={name}"])
    assert f"experiment_name: {name!r} is not a plain directory name" in message
    assert (other / "keep.txt").is_file() and sorted(p.name for p in (root / "runs").iterdir()) == ["other"]
    assert not (root / "outside").exists()


def test_overwrite_deletes_only_a_torchlingo_run(root, capsys):
    """A folder that happens to hold a metrics.json is not a run: --overwrite leaves it alone."""
    folder = root / "runs" / "notes"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text("{}\n")
    (folder / "thesis.tex").write_text("\\section{Results}\n")
    message = fails(capsys, ["train", str(write_config(root, "notes")), "--overwrite"])
    assert f"{folder}: holds files that are not a torchlingo run" in message
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.json", "thesis.tex"]


def test_overwrite_of_a_run_keeps_other_runs(root, capsys):
    config = write_config(root, "first", num_epochs=1, test_file=None)
    assert main(["train", str(config)]) == 0
    (root / "runs" / "second").mkdir()
    (root / "runs" / "second" / "keep.txt").write_text("x\n")
    assert main(["train", str(config), "--overwrite"]) == 0
    assert (root / "runs" / "second" / "keep.txt").is_file()
    assert (root / "runs" / "first" / "checkpoints" / "last.pt").is_file()


# -- one process per run -------------------------------------------------------------------------------------
HOLDER = "import sys, time; from torchlingo.rundir import RunLock; RunLock(sys.argv[1]).acquire(); print('READY', flush=True); time.sleep(300)"  # noqa: E501


def test_second_process_on_a_run_is_refused_and_a_dead_holder_releases_it(root, capsys):
    config = write_config(root, num_epochs=1, test_file=None)
    run = root / "runs" / "tiny"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO
    )
    try:
        assert holder.stdout.readline().strip() == "READY"
        message = fails(capsys, ["train", str(config)])
        assert message.startswith(f"torchlingo: error: {run}: in use by another torchlingo process ")
        assert f"(pid {holder.pid} on {socket.gethostname()}, started " in message
        assert not (run / "checkpoints").exists()  # refused before anything was written
    finally:
        holder.kill()  # SIGKILL: no clean-up code runs; the kernel drops the lock
        holder.wait()
    assert main(["train", str(config)]) == 0  # the stale lock file does not block
    holder_info = json.loads((run / "torchlingo.lock").read_text())
    assert holder_info["pid"] == os.getpid()


def test_a_training_run_holds_its_directory(root, monkeypatch, capsys):
    """While `train` runs, a second `train` of the same run fails at once; after the first ends it is free."""
    config = write_config(root, num_epochs=1, test_file=None)
    advance, seen = RunLogger.advance, []

    def second_train(self):
        if not seen:
            seen.append(main(["train", str(config), "--overwrite"]))
        advance(self)

    monkeypatch.setattr(RunLogger, "advance", second_train)
    assert main(["train", str(config)]) == 0
    assert seen == [2]
    assert f"in use by another torchlingo process (pid {os.getpid()} " in capsys.readouterr().err
    monkeypatch.setattr(RunLogger, "advance", advance)
    assert main(["train", str(config), "--overwrite"]) == 0


# -- what a resume checks ------------------------------------------------------------------------------------
def test_resume_refuses_changed_training_data_unless_accepted(root, capsys, torchlingo_logs):
    config, run = interrupted_run(root, capsys)
    train = root / "data" / "train.tsv"
    lines = train.read_text().splitlines()
    train.write_text("\n".join([lines[0], lines[2], lines[1], *lines[3:]]) + "\n")  # two pairs swapped
    message = fails(capsys, ["train", str(config), "--resume"])
    assert f"{run / 'checkpoints' / 'last.pt'}: the training data changed since this checkpoint" in message
    assert "(train.tsv: same size, other content)" in message
    assert "(epoch 1, batch 4)" in message and "--accept-data-change" in message
    train.write_text("\n".join(lines + ["a cat\tun gato"]) + "\n")
    assert "train.tsv: 65 -> 66 lines" in fails(capsys, ["train", str(config), "--resume"])

    assert main(["train", str(config), "--resume", "--accept-data-change"]) == 0
    assert "--accept-data-change accepted (train.tsv: 65 -> 66 lines" in torchlingo_logs.text
    assert "resumed from step 4 (epoch 1, batch 0)" in torchlingo_logs.text  # the checkpoint's epoch restarts
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["run_info"]["corpus"][0]["lines"] == 66 and last["run_info"]["train_pairs"] == 65
    assert "--accept-data-change: only with --resume" in fails(capsys, ["train", str(config), "--accept-data-change"])


def test_resume_refuses_changed_batching(root, capsys):
    config, _ = interrupted_run(root, capsys)
    message = fails(capsys, ["train", str(config), "--resume", "--set", "max_tokens=128"])
    assert "the training data changed since this checkpoint (max_tokens 96 -> 128)" in message
    assert "seed 3 -> 4" in fails(capsys, ["train", str(config), "--resume", "--set", "seed=4"])


def test_resume_tokenizer_file_must_match_the_checkpoint(root, capsys):
    config, run = interrupted_run(root, capsys)
    vocab = run / "src_vocab.txt"
    tokens = vocab.read_text().splitlines()
    tokens[4], tokens[5] = tokens[5], tokens[4]  # two words swap ids: the model's embeddings no longer match
    vocab.write_text("\n".join(tokens) + "\n")
    message = fails(capsys, ["train", str(config), "--resume"])
    assert f"{vocab}: differs from the vocabulary stored in {run / 'checkpoints' / 'last.pt'}" in message
    vocab.unlink()  # a missing file is written again from the checkpoint
    assert main(["train", str(config), "--resume"]) == 0
    assert vocab.read_text().splitlines()[4:6] == tokens[4:6][::-1]


def test_resume_takes_the_model_shape_from_the_checkpoint(root, capsys):
    """The run directory's config.yaml is not what a resume trusts: with it gone, a changed model shape is still
    named from the checkpoint's own config."""
    config, run = interrupted_run(root, capsys)
    (run / "config.yaml").unlink()
    message = fails(capsys, ["train", str(config), "--resume", "--set", "d_model=32"])
    assert f"d_model: the run in {run} used 16 (its checkpoint last.pt says so), now 32" in message


def test_empty_config_file_is_an_error_not_the_defaults(root, capsys):
    _, run = interrupted_run(root, capsys)
    saved = run / "config.yaml"
    saved.write_text("")  # what a crash during a non-atomic write leaves
    message = fails(capsys, ["train", str(saved), "--resume"])
    assert (
        message
        == f"torchlingo: error: {saved}: the config file is empty (no settings); write {{}} in it for all the defaults"
    )  # noqa: E501


def test_tensorboard_curve_is_whole_after_a_resume(root, capsys):
    """The resumed run logs from step 5 on; the interrupted one logged steps 1-4 (last.pt at step 4). TensorBoard
    purges the events of steps >= purge_step when it reads the second file, so every step is there exactly once."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config, run = interrupted_run(root, capsys)
    assert main(["train", str(config), "--resume"]) == 0
    steps = json.loads((run / "metrics.json").read_text())["steps"]
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, steps + 1))
    assert [e.step for e in events.Scalars("train/learning_rate")] == list(range(1, steps + 1))


def test_run_files_get_ordinary_permissions(root, capsys):
    """Written through a temporary file and a rename, each file still gets what open() would give it (0666 less
    the umask), or keeps the mode of the file it replaces."""
    old = os.umask(0o022)
    try:
        assert main(["train", str(write_config(root, num_epochs=1))]) == 0
        run = root / "runs" / "tiny"
        for name in ("config.yaml", "src_vocab.txt", "metrics.json", "test.hyp", "checkpoints/last.pt"):
            assert (run / name).stat().st_mode & 0o777 == 0o644, name
        out = root / "out.txt"
        out.write_text("old\n")
        out.chmod(0o640)
        best = str(run / "checkpoints" / "best.pt")
        assert (
            main(["translate", "--checkpoint", best, "--input", str(root / "data" / "val.tsv"), "--output", str(out)])
            == 0
        )
        assert out.stat().st_mode & 0o777 == 0o640 and out.read_text() != "old\n"
    finally:
        os.umask(old)


def test_a_resume_reads_its_checkpoint_twice_not_three_times(root, monkeypatch, capsys):
    """Once for the settings, vocabularies and data fingerprint (on the CPU), once into the model and optimizer
    (on the training device): a large checkpoint read a third time cost seconds and its size in memory again."""
    config, run = interrupted_run(root, capsys)
    real_load, reads = torch.load, []

    def counting_load(f, *args, **kwargs):
        reads.append(os.path.basename(str(f)))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    assert main(["train", str(config), "--resume"]) == 0
    assert reads.count("last.pt") == 2, reads
