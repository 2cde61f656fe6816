"""`translate` and `evaluate` read the project's own TSV (header and all) as well as plain text; `evaluate --run`."""

from __future__ import annotations

import io
import json
import sys

import pytest
from cli_helpers import one_error_line, run_module, write_config, write_corpus

from torchlingo.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run: (root, run_dir, test BLEU that train wrote)."""
    root = write_corpus(tmp_path_factory.mktemp("formats"))
    saved, sys.stdout = sys.stdout, io.StringIO()
    try:
        assert main(["train", str(write_config(root))]) == 0
    finally:
        sys.stdout = saved
    run = root / "runs" / "tiny"
    return root, run, json.loads((run / "metrics.json").read_text())["test_bleu"]


def _plain_files(root):
    """data/test.tsv (with its `src<TAB>tgt` header) split into test.src / test.ref."""
    rows = [ln.split("\t") for ln in (root / "data" / "test.tsv").read_text().splitlines()[1:]]
    (root / "test.src").write_text("".join(s + "\n" for s, _ in rows))
    (root / "test.ref").write_text("".join(t + "\n" for _, t in rows))
    return root / "test.src", root / "test.ref"


def _scores(capsys, *args) -> dict:
    capsys.readouterr()
    assert main(["evaluate", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_evaluate_reads_the_tsv_columns_and_skips_its_header(trained, capsys):
    root, run, test_bleu = trained
    best = run / "checkpoints" / "best.pt"
    tsv = root / "data" / "test.tsv"
    src, ref = _plain_files(root)
    plain = _scores(capsys, "--checkpoint", best, "--src", src, "--ref", ref)
    both = _scores(capsys, "--checkpoint", best, "--src", tsv, "--ref", tsv)
    only_src = _scores(capsys, "--checkpoint", best, "--src", tsv)  # the references: the TSV's target column
    mixed = _scores(capsys, "--checkpoint", best, "--src", src, "--ref", tsv)
    # the same 10 sentences whichever way they come: the BLEU that train computed on the same test set
    assert plain["bleu"] == both["bleu"] == only_src["bleu"] == mixed["bleu"] == pytest.approx(test_bleu)


def test_evaluate_run_dir_scores_the_test_set_with_the_best_checkpoint(trained, capsys):
    root, run, test_bleu = trained
    assert _scores(capsys, "--run", run)["bleu"] == pytest.approx(test_bleu)
    # --checkpoint RUN_DIR stands for RUN_DIR/checkpoints/best.pt
    tsv = root / "data" / "test.tsv"
    assert _scores(capsys, "--checkpoint", run, "--src", tsv)["bleu"] == pytest.approx(test_bleu)


def test_evaluate_errors_name_what_is_missing(trained, capsys, tmp_path):
    root, run, _ = trained
    src, _ = _plain_files(root)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run), "--src", str(src)]) == 2
    assert "is plain text; give the references with --ref" in one_error_line(capsys.readouterr().err)
    assert main(["evaluate", "--src", str(src)]) == 2
    assert "give --checkpoint" in one_error_line(capsys.readouterr().err)
    assert main(["evaluate", "--run", str(tmp_path)]) == 2
    assert "not a run directory (no config.yaml)" in one_error_line(capsys.readouterr().err)
    assert main(["translate", "--checkpoint", str(tmp_path), "--input", str(src)]) == 2
    assert "is a directory, not a checkpoint file nor a run directory" in one_error_line(capsys.readouterr().err)
    bad = tmp_path / "bad.tsv"
    bad.write_text("src\ttgt\nthe cat\tel gato\nthe dog\tel\tperro\n")
    assert main(["evaluate", "--checkpoint", str(run), "--src", str(bad)]) == 2
    assert f"{bad}:3: expected 2 tab-separated columns" in one_error_line(capsys.readouterr().err)


def test_translate_reads_the_source_column_of_a_tsv(trained, capsys, monkeypatch):
    root, run, _ = trained
    src, _ = _plain_files(root)
    capsys.readouterr()
    assert main(["translate", "--checkpoint", str(run), "--input", str(src)]) == 0
    plain = capsys.readouterr().out
    assert main(["translate", "--checkpoint", str(run), "--input", str(root / "data" / "test.tsv")]) == 0
    assert capsys.readouterr().out == plain and len(plain.splitlines()) == 10  # no line for the header
    tsv_text = (root / "data" / "test.tsv").read_text()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(tsv_text.encode()), encoding="utf-8"))
    assert main(["translate", "--checkpoint", str(run)]) == 0  # stdin: recognized by its header
    assert capsys.readouterr().out == plain


def test_word_vocabularies_report_unknown_words(trained, torchlingo_logs, capsys):
    """Training logs the <unk> share of val and test at load time; translate and evaluate that of their input."""
    root, run, _ = trained
    src = root / "unknown.txt"
    src.write_text("the cat sees a zebra\nthe red house\n")  # 8 words, "zebra" not in the toy vocabulary
    with torchlingo_logs.at_level("INFO", logger="torchlingo"):
        assert main(["translate", "--checkpoint", str(run), "--input", str(src)]) == 0
    lines = [r.getMessage() for r in torchlingo_logs.records if "unknown words" in r.getMessage()]
    assert lines == [f"{src}: unknown words: 1 of 8 (12.5%) source tokens are not in the model's word vocabulary"]
    torchlingo_logs.clear()
    config = write_config(root, "unk", num_epochs=1)
    with torchlingo_logs.at_level("INFO", logger="torchlingo"):
        assert main(["train", str(config)]) == 0
    lines = [r.getMessage() for r in torchlingo_logs.records if "unknown words" in r.getMessage()]
    # val and test come from the same 12-word toy lexicon as train: nothing unknown, and said so, once each
    assert [ln.split(":")[0] for ln in lines] == [str(root / "data" / "val.tsv"), str(root / "data" / "test.tsv")]
    assert all("source 0 of" in ln and "(0.0%) tokens, target 0 of" in ln for ln in lines)


def test_the_command_prints_the_unknown_word_line_to_stderr(trained):
    """Through `python -m torchlingo` (the library adds no handler; the command's main() prints the log lines)."""
    root, run, _ = trained
    proc = run_module("translate", "--checkpoint", str(run), stdin="the zebra sees a cat\n")
    assert proc.returncode == 0, proc.stderr
    assert "<stdin>: unknown words: 1 of 5 (20.0%) source tokens" in proc.stderr
    assert len(proc.stdout.splitlines()) == 1
