"""Damaged, hostile and unwritable checkpoints: one-line errors naming the file, and no code ever runs."""

import errno
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import tiny_config

import torchlingo.checkpoint as ckpt
from torchlingo.checkpoint import find_resumable, load_checkpoint, load_resumable, previous_path, save_checkpoint
from torchlingo.data_processing import NMTDataset, make_loader
from torchlingo.errors import CheckpointError
from torchlingo.models import SimpleTransformer
from torchlingo.training import train_model


def state(step: int, n: int = 2000) -> dict:
    torch.manual_seed(step)
    return {"model": {"w": torch.randn(n)}, "position": {"step": step}}


def one_line_error(path: Path, **kwargs) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, **kwargs)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    return message


@pytest.mark.parametrize("keep", [0.0, 0.001, 0.5, 0.999])
def test_truncated_checkpoint_is_a_clear_error(tmp_path, keep):
    path = save_checkpoint(state(1), tmp_path / "last.pt")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])  # what a crash without atomic writes leaves
    assert "corrupt or truncated checkpoint" in one_line_error(path)


def test_flipped_byte_in_the_weights_is_detected(tmp_path):
    """torch.load alone returns the damaged tensor silently; the CRC check refuses it."""
    path = save_checkpoint(state(1, n=20000), tmp_path / "last.pt")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the 80 kB weight record
    path.write_bytes(bytes(data))
    assert "checksum mismatch" in one_line_error(path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("content", [b"not a checkpoint at all\n", b"PK\x03\x04garbage", b"\x80\x04\x95junk"])
def test_garbage_file(tmp_path, content):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    assert "corrupt" in one_line_error(path)


def test_not_a_torchlingo_checkpoint(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "dict.pt")
    assert "not a torchlingo checkpoint" in one_line_error(tmp_path / "list.pt")
    assert "not a torchlingo checkpoint" in one_line_error(tmp_path / "dict.pt")
    assert "not found" in one_line_error(tmp_path / "missing.pt")


class Evil:
    """Unpickling this runs os.system: the attack a stranger's checkpoint can carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, fmt):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"model": {"w": torch.zeros(2)}, "extra": Evil(marker)}
    if fmt == "zip":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)  # the protocol torch's legacy format uses
    message = one_line_error(path)
    assert "refused" in message and "could run code" in message
    with pytest.raises(CheckpointError):
        ckpt.load_model(path)
    assert not marker.exists()
    # Control: the file really is an attack; an unsafe load runs it (in a child, to keep this process clean).
    control = tmp_path / "control.pt"
    torch.save({"x": Evil(tmp_path / "ran")}, control)
    subprocess.run(
        [sys.executable, "-c", f"import torch; torch.load({str(control)!r}, weights_only=False)"], check=True
    )
    assert (tmp_path / "ran").exists()


def test_keep_previous_rotates_last(tmp_path):
    last = tmp_path / "last.pt"
    save_checkpoint(state(1), last, keep_previous=True)
    assert not previous_path(last).exists()
    save_checkpoint(state(2), last, keep_previous=True)
    save_checkpoint(state(3), last, keep_previous=True)
    assert load_checkpoint(last)["position"]["step"] == 3
    assert load_checkpoint(previous_path(last))["position"]["step"] == 2
    assert {p.name for p in tmp_path.iterdir()} == {"last.pt", "last.prev.pt"}


def test_find_resumable_falls_back_to_newest_readable(tmp_path, torchlingo_logs):
    d = tmp_path / "checkpoints"
    save_checkpoint(state(4), d / "best.pt")
    save_checkpoint(state(5), d / "last.pt", keep_previous=True)
    save_checkpoint(state(6), d / "last.pt", keep_previous=True)
    assert find_resumable(d) == d / "last.pt"
    assert not torchlingo_logs.records

    (d / "last.pt").write_bytes((d / "last.pt").read_bytes()[:100])  # truncated
    assert find_resumable(d) == d / "last.prev.pt"
    message = torchlingo_logs.records[-1].getMessage()
    assert "last.pt: corrupt or truncated" in message and "resuming from" in message and "step 5" in message

    (d / "last.prev.pt").write_bytes(b"")
    assert find_resumable(d) == d / "best.pt"
    path, loaded = load_resumable(d)  # the chosen file's state comes with it: a resume reads it once
    assert path == d / "best.pt" and loaded["position"]["step"] == 4
    for p in d.iterdir():
        p.write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        find_resumable(d)
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        find_resumable(tmp_path / "empty")


def test_disk_full_during_save_keeps_previous_file(tmp_path, monkeypatch):
    """ENOSPC in the middle of torch.save: a one-line error, last.pt still the old one, no temporary file left."""
    last = save_checkpoint(state(1), tmp_path / "last.pt", keep_previous=True)
    real_save = torch.save

    def full_disk(obj, f):
        f.write(b"PK\x03\x04" + b"\0" * 1000)  # half a checkpoint reaches the disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt.torch, "save", full_disk)
    with pytest.raises(
        CheckpointError,
        match=r"last\.pt: cannot write checkpoint \(No space left on device\); the previous file is intact",
    ):
        save_checkpoint(state(2), last, keep_previous=True)
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    assert load_checkpoint(last)["position"]["step"] == 1
    assert find_resumable(tmp_path) == last
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_real_write_failure_file_size_limit(tmp_path):
    """A real failing write (RLIMIT_FSIZE -> EFBIG, the kernel's own error), which torch.save reports as an
    opaque RuntimeError, becomes the one-line error with the OS reason."""
    code = f"""
import resource, signal, torch
from torchlingo.checkpoint import save_checkpoint
from torchlingo.errors import CheckpointError
save_checkpoint({{"model": {{"w": torch.zeros(10)}}}}, {str(tmp_path / "last.pt")!r})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (50000, 50000))
try:
    save_checkpoint({{"model": {{"w": torch.randn(100000)}}}}, {str(tmp_path / "last.pt")!r}, keep_previous=True)
except CheckpointError as e:
    print(e)
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert (
        out.strip() == f"{tmp_path / 'last.pt'}: cannot write checkpoint (File too large); the previous file is intact"
    )
    assert torch.equal(load_checkpoint(tmp_path / "last.pt")["model"]["w"], torch.zeros(10))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_unwritable_run_directory_fails_at_start_up(toy_data):
    blocker = toy_data / "a_file"
    blocker.write_text("I am a file, not a directory\n")
    config = tiny_config(blocker, num_epochs=1)
    train = NMTDataset(toy_data / "data" / "train.tsv", config=config)
    model = SimpleTransformer(len(train.src_vocab), len(train.tgt_vocab), config=config)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(
        CheckpointError, match=r"a_file/runs/experiment/checkpoints: cannot write checkpoints there \(Not a directory\)"
    ):
        train_model(model, make_loader(train, config, shuffle=True), None, config)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # failed before any training
