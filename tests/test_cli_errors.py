"""Every user mistake exits 2 with one line naming the key, file or line, and no traceback."""

from __future__ import annotations

import gzip

import pytest
import torch
from cli_helpers import one_error_line, run_module, write_config, write_corpus

from torchlingo.checkpoint import FORMAT_VERSION
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
    assert not (root / "runs").exists()  # nothing created for a run that is not there


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


# -- config files mean what they say -------------------------------------------------------------------------
def test_duplicated_group_or_key_names_both_lines(root, capsys):
    base = write_config(root).read_text()
    twice = root / "twice.yaml"
    twice.write_text(base + "training:\n  num_epochs: 5\n")  # a second training: group would replace the first
    first = base.splitlines().index("training:") + 1
    last = len(base.splitlines()) + 1
    message = fails(capsys, ["train", str(twice)])
    assert message == (
        f"torchlingo: error: {twice}:{last}: key 'training' is given twice (lines {first} and {last}); keep one of them"
    )
    seed = root / "seed.yaml"
    seed.write_text("seed: 1\nmodel: {d_model: 16}\nseed: 2\n")
    assert f"{seed}:3: key 'seed' is given twice (lines 1 and 3)" in fails(capsys, ["train", str(seed)])
    assert not (root / "runs").exists()


def test_empty_config_file_is_an_error(root, capsys):
    empty = root / "empty.yaml"
    empty.write_text("# nothing here yet\n")
    assert f"{empty}: the config file is empty (no settings)" in fails(capsys, ["train", str(empty)])


def test_max_len_must_fit_max_positions(root, capsys):
    message = fails(capsys, ["train", str(write_config(root)), "--set", "max_positions=64", "--set", "max_len=100"])
    assert "max_len: 100 tokens plus <s> and </s> do not fit in max_positions=64; set max_len to at most 62" in message
    assert not (root / "runs").exists()


def test_validation_pair_longer_than_the_model_takes(root, capsys, torchlingo_logs):
    """A validation pair the model cannot take is a bad line: found when the data is read, not after training."""
    val = root / "data" / "val.tsv"
    lines = val.read_text().splitlines()
    lines[5] = " ".join(["dog"] * 40) + "\tperro"
    val.write_text("\n".join(lines) + "\n")
    config = write_config(root, max_positions=32, max_len=30, num_epochs=1, test_file=None)
    message = fails(capsys, ["train", str(config)])
    assert message.startswith(
        f"torchlingo: error: {val}:6: source of 40 tokens, more than the model's max_positions=32"
    )
    assert not (root / "runs" / "tiny" / "checkpoints").exists()
    assert main(["train", str(config), "--set", "bad_lines=skip"]) == 0
    assert f"{val}: kept 11 pairs, skipped 1 (1 longer than the model takes (first at {val}:6))" in torchlingo_logs.text


# -- inputs that pass the policy but are wrong ---------------------------------------------------------------
def test_utf16_training_file_is_a_file_level_error_under_skip(root, capsys):
    train = root / "data" / "train.tsv"
    train.write_bytes(train.read_text(encoding="utf-8").encode("utf-16"))  # with its byte-order mark
    config = write_config(root)
    message = fails(capsys, ["train", str(config), "--set", "bad_lines=skip"])
    assert f"{train}: UTF-16 text: found a byte-order mark; convert it to UTF-8" in message
    train.write_bytes(train.read_bytes()[2:])  # the same without the mark: a NUL after every ASCII character
    message = fails(capsys, ["train", str(config), "--set", "bad_lines=skip"])
    assert (
        f"{train}: not UTF-8 text (UTF-16 or UTF-32 text, or a binary or damaged file): found a NUL byte at line 1"
        in message
    )


def test_nul_filled_block_is_a_file_level_error(root, capsys):
    """A block of zero bytes (what a crash can leave in a file) is not one skippable line."""
    train = root / "data" / "train.tsv"
    train.write_bytes(train.read_bytes() + b"\0" * 4096 + b"\n")
    message = fails(capsys, ["train", str(write_config(root)), "--set", "bad_lines=skip"])
    assert f"{train}: not UTF-8 text" in message and "found a NUL byte at line 66" in message


def test_latin1_file_is_a_file_level_error_under_skip(root, capsys):
    train = root / "data" / "train.tsv"
    rows = [f"caf\xe9 {i}\tcaf\xe9 {i}" for i in range(30)] + ["a cat\tun gato"] * 10
    train.write_bytes("\n".join(rows).encode("latin-1") + b"\n")
    message = fails(capsys, ["train", str(write_config(root)), "--set", "bad_lines=skip"])
    assert f"{train}: 30 of 40 lines are not valid UTF-8: the file is in another encoding" in message


def test_sentencepiece_vocab_size_too_small_says_the_minimum(root, capsys):
    config = write_config(root, tokenizer="sentencepiece", vocab_size=10)
    message = fails(capsys, ["train", str(config)])
    assert "vocab_size: 10 is too small for the training text: SentencePiece needs at least " in message
    needed = int(message.split("needs at least ")[1].split()[0])
    assert needed > 10
    assert main(["train", str(config), "--set", f"vocab_size={needed}", "--set", "num_epochs=1"]) == 0


# -- clearer refusals: checkpoints and outputs ---------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny finished run: (root, path of its best.pt)."""
    root = write_corpus(tmp_path_factory.mktemp("refusals"))
    assert main(["train", str(write_config(root, num_epochs=1, test_file=None))]) == 0
    return root, root / "runs" / "tiny" / "checkpoints" / "best.pt"


def translate(root, checkpoint, *extra) -> list[str]:
    src = root / "src.txt"
    src.write_text("the cat sees a dog\n")
    return ["translate", "--checkpoint", str(checkpoint), "--input", str(src), *extra]


def test_checkpoint_path_that_is_a_directory(trained, capsys):
    root, best = trained
    message = fails(capsys, translate(root, best.parent))  # checkpoints/ itself; the run directory means best.pt
    assert f"{best.parent}: is a directory, not a checkpoint file nor a run directory" in message


def test_another_projects_checkpoint_is_not_blamed_on_the_version(trained, capsys):
    root, _ = trained
    foreign = root / "foreign.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "optimizer": {}, "epoch": 3}, foreign)
    message = fails(capsys, translate(root, foreign))
    assert f"{foreign}: not a torchlingo checkpoint (a dict with keys epoch, model, optimizer)" in message
    assert "version" not in message


def test_newer_checkpoint_format_is_refused(trained, capsys):
    root, best = trained
    state = torch.load(best, weights_only=True)
    newer = root / "newer.pt"
    torch.save({**state, "format_version": FORMAT_VERSION + 1}, newer)
    message = fails(capsys, translate(root, newer))
    assert f"{newer}: written in checkpoint format {FORMAT_VERSION + 1}, newer than this torchlingo reads" in message


def test_shape_mismatch_names_the_tensor_and_both_shapes(trained, capsys):
    root, best = trained
    state = torch.load(best, weights_only=True)
    state["model"]["src_embed.weight"] = torch.zeros(7, 16)
    edited = root / "edited.pt"
    torch.save(state, edited)
    message = fails(capsys, translate(root, edited))
    assert f"{edited}: tensor src_embed.weight has shape [7, 16] in the checkpoint" in message
    assert f"needs [{state['model_args']['src_vocab_size']}, 16]" in message


def test_unknown_settings_in_a_checkpoint_warn_once(trained, capsys, torchlingo_logs):
    root, best = trained
    state = torch.load(best, weights_only=True)
    state["config"]["future_option"] = 1
    state["model_args"]["future_layer_norm"] = "rms"
    later = root / "later.pt"
    torch.save(state, later)
    out = root / "later.txt"
    capsys.readouterr()
    assert main(translate(root, later, "--output", str(out))) == 0
    warnings = [r.getMessage() for r in torchlingo_logs.records if "does not know" in r.getMessage()]
    assert warnings == [f"{later}: ignoring settings this torchlingo does not know: future_layer_norm, future_option"]
    assert len(out.read_text().splitlines()) == 1


def test_translate_output_into_a_missing_directory_fails_first(trained, capsys, monkeypatch):
    from torchlingo.translator import Translator

    root, best = trained
    monkeypatch.setattr(Translator, "translate", lambda *a, **k: pytest.fail("translated before checking --output"))
    out = root / "no" / "such" / "dir" / "out.txt"
    message = fails(capsys, translate(root, best, "--output", str(out)))
    assert message == f"torchlingo: error: {out}: the directory {out.parent} does not exist; create it first"
    assert not (root / "no").exists()
    args = ["evaluate", "--checkpoint", str(best), "--src", str(root / "src.txt"), "--ref", str(root / "src.txt")]
    assert f"{out}: the directory" in fails(capsys, [*args, "--output", str(out)])


def test_evaluate_empty_source_and_reference(trained, capsys):
    root, best = trained
    (root / "empty.src").write_text("")
    (root / "empty.ref").write_text("")
    args = ["evaluate", "--checkpoint", str(best), "--src", str(root / "empty.src"), "--ref", str(root / "empty.ref")]
    message = fails(capsys, args)
    assert f"{root / 'empty.src'} and {root / 'empty.ref'} are empty: no sentences to translate and score" in message


@pytest.mark.parametrize("value", ["-1", "nan", "long"])
def test_length_penalty_must_be_a_number_of_at_least_0(capsys, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--checkpoint", "best.pt", "--length-penalty", value])
    assert exit_info.value.code == 2
    assert f"argument --length-penalty: '{value}' is not a number >= 0" in capsys.readouterr().err
