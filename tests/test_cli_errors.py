"""Every user mistake exits 2 with one line naming the key, file or line, and no traceback."""

from __future__ import annotations

import gzip

import pytest
from cli_helpers import one_error_line, run_module, write_config, write_corpus

from torchlingo.cli import main


@pytest.fixture
def root(tmp_path):
    return write_corpus(tmp_path)


def fails(capsys, argv) -> str:
    assert main(argv) == 2
    return one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"lerning_rate": 0.1}, "unknown key 'lerning_rate'; did you mean 'learning_rate'?"),
        ({"d_model": "wide"}, "d_model: expected an integer, got 'wide'"),
        ({"dropout": 1.5}, "dropout: must be <= 0.99, got 1.5"),
        ({"scheduler_type": "cosin"}, "scheduler_type: 'cosin' is not one of"),
        ({"n_heads": 3}, "n_heads: 3 does not divide d_model 16"),
    ],
)
def test_bad_config_value_names_the_key(root, capsys, change, expected):
    config = root / "bad.yaml"
    base = write_config(root).read_text()
    key, value = next(iter(change.items()))
    # put the bad key at the top level (YAML groups are optional): the later group entry is removed
    lines = [ln for ln in base.splitlines() if not ln.strip().startswith(f"{key}:")]
    config.write_text(f"{key}: {value!r}\n" + "\n".join(lines) + "\n")
    message = fails(capsys, ["train", str(config)])
    assert expected in message
    assert not (root / "runs").exists()  # nothing was written for a config that does not load


def test_bad_override_names_the_key(root, capsys):
    message = fails(capsys, ["train", str(write_config(root)), "--set", "max_step=3"])
    assert "unknown key 'max_step'; did you mean 'max_steps'?" in message
    assert "expected KEY=VALUE" in fails(capsys, ["train", str(write_config(root)), "--set", "max_steps"])


def test_missing_config_file(root, capsys):
    assert f"{root / 'nope.yaml'}: config file not found" in fails(capsys, ["train", str(root / "nope.yaml")])


def test_invalid_yaml_names_the_line(root, capsys):
    config = root / "broken.yaml"
    config.write_text("data:\n  train_file: [unclosed\nmodel: {}\n")
    assert f"{config}:" in fails(capsys, ["train", str(config)])


@pytest.mark.parametrize("key", ["train_file", "val_file", "test_file"])
def test_missing_data_file_names_the_file(root, capsys, key):
    missing = root / "data" / f"missing_{key}.tsv"
    message = fails(capsys, ["train", str(write_config(root, **{key: str(missing)}))])
    assert message == f"torchlingo: error: {missing}: file not found"
    assert not (root / "runs" / "tiny" / "checkpoints").exists()  # stopped before training


def test_malformed_tsv_line_names_file_and_line(root, capsys):
    val = root / "data" / "val.tsv"
    lines = val.read_text().splitlines()
    lines[3] = lines[3] + "\textra column"
    val.write_text("\n".join(lines) + "\n")
    message = fails(capsys, ["train", str(write_config(root))])
    assert f"{val}:4: expected 2 tab-separated columns, found 3" in message


def test_parallel_files_with_different_line_counts(root, capsys):
    (root / "par.de").write_text("ein Hund\nzwei Katzen\ndrei\n")
    (root / "par.en").write_text("a dog\ntwo cats\n")
    config = write_config(root, train_file=str(root / "par"), src_lang="de", tgt_lang="en")
    message = fails(capsys, ["train", str(config)])
    assert f"{root / 'par.de'} has 3 lines but {root / 'par.en'} has 2" in message


def test_resume_without_a_run(root, capsys):
    message = fails(capsys, ["train", str(write_config(root)), "--resume"])
    assert "checkpoints/last.pt: no checkpoint to resume from" in message


def test_translate_missing_checkpoint_and_input(root, capsys):
    assert "nope.pt: checkpoint not found" in fails(capsys, ["translate", "--checkpoint", str(root / "nope.pt")])
    corrupt = root / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    assert f"{corrupt}: " in fails(  # refused or reported corrupt, either way one line naming the file
        capsys, ["translate", "--checkpoint", str(corrupt), "--input", str(root / "data" / "test.tsv")]
    )
    assert "missing.txt: cannot read" in fails(
        capsys, ["translate", "--checkpoint", str(corrupt), "--input", str(root / "missing.txt")]
    )


def test_download_from_a_mirror_without_the_file(tmp_path, capsys):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "train.de.gz").write_bytes(gzip.compress(b"ein Hund\n"))
    message = fails(
        capsys,
        ["download", "multi30k", "--dest", str(tmp_path / "out"), "--splits", "train", "--base-url", mirror.as_uri()],
    )
    assert "train.en.gz" in message


def test_subprocess_error_is_one_line_exit_2(root):
    proc = run_module("train", str(write_config(root)), "--set", "batch_sise=8")
    assert proc.returncode == 2
    assert "unknown key 'batch_sise'; did you mean 'batch_size'?" in one_error_line(proc.stderr)


def test_argparse_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["translate"])  # --checkpoint is required
    assert exit_info.value.code == 2
    assert "--checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value", [("--beam-size", "0"), ("--max-tokens", "-5"), ("--parallel-batches", "two")])
def test_decoding_flags_must_be_positive_integers(capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["translate", "--checkpoint", "best.pt", flag, value])
    assert exit_info.value.code == 2
    assert f"argument {flag}: '{value}' is not a positive integer" in capsys.readouterr().err
