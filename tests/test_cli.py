"""`torchlingo train | translate | evaluate | download`, run in-process through `main` and once as `python -m`."""

from __future__ import annotations

import gzip
import io
import json
import sys

import pytest
import torch
from cli_helpers import RUN_FILES, ctrl_c_at_step, one_error_line, run_module, write_config, write_corpus

from torchlingo.cli import _translator, build_parser, main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run shared by the translate/evaluate tests: (root, run_dir, stdout of train)."""
    root = write_corpus(tmp_path_factory.mktemp("cli"))
    out = io.StringIO()
    saved, sys.stdout = sys.stdout, out
    try:
        assert main(["train", str(write_config(root))]) == 0
    finally:
        sys.stdout = saved
    return root, root / "runs" / "tiny", out.getvalue()


def test_train_writes_every_file_of_the_run(trained):
    root, run, stdout = trained
    names = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
    assert set(RUN_FILES) <= names
    assert any(n.startswith("events.out.tfevents.") for n in names)
    metrics = json.loads((run / "metrics.json").read_text())
    # 64 toy pairs in 96-token batches: the sampler gives a fixed number of batches an epoch, 2 epochs
    steps_per_epoch = metrics["steps"] // 2
    assert metrics["steps"] == 2 * steps_per_epoch and metrics["epochs"] == 2 and steps_per_epoch >= 3
    assert 1 <= metrics["best_step"] <= metrics["steps"]
    assert 0 < metrics["best_val_loss"] < 10 and metrics["train_time_s"] > 0 and metrics["tokens_per_second"] > 0
    assert 0 <= metrics["test_bleu"] <= 100 and 0 <= metrics["test_chrf"] <= 100
    assert metrics["test_bleu_signature"].startswith("nrefs:1|") and metrics["test_sentences"] == 10
    hyps = (run / "test.hyp").read_text().splitlines()
    assert len(hyps) == 10
    assert f"test BLEU = {metrics['test_bleu']:.2f}  nrefs:1|" in stdout and "test chrF = " in stdout
    saved = (run / "config.yaml").read_text()
    assert "experiment_name: tiny" in saved and "d_model: 16" in saved  # the resolved config, grouped


def test_train_sentencepiece_saves_the_model_and_refuses_to_overwrite(tmp_path, capsys):
    root = write_corpus(tmp_path)
    config = write_config(root, "sp", tokenizer="sentencepiece", vocab_size=40, num_epochs=1, test_file=None)
    assert main(["train", str(config)]) == 0
    run = root / "runs" / "sp"
    assert (run / "spm.model").is_file() and not (run / "src_vocab.txt").exists()
    assert "test_bleu" not in json.loads((run / "metrics.json").read_text())  # no test_file, no test scores
    capsys.readouterr()
    assert main(["train", str(config)]) == 2  # a finished run is not silently overwritten
    message = one_error_line(capsys.readouterr().err)
    assert f"{run}: holds an earlier run" in message and "--resume" in message and "--overwrite" in message
    before = (run / "checkpoints" / "last.pt").stat().st_mtime_ns
    assert main(["train", str(config), "--overwrite"]) == 0
    assert (run / "checkpoints" / "last.pt").stat().st_mtime_ns != before


def test_resume_after_interrupt_continues_from_last_pt(tmp_path, capsys):
    """Ctrl-C at step 5 exits 130; --resume goes on from last.pt (step 4) and ends like an uninterrupted run."""
    root = write_corpus(tmp_path)
    common = dict(checkpoint_interval=2, test_file=None)
    assert main(["train", str(write_config(root, "whole", **common))]) == 0
    whole = json.loads((root / "runs" / "whole" / "metrics.json").read_text())

    config = write_config(root, "cut", **common)
    with ctrl_c_at_step(5):
        assert main(["train", str(config)]) == 130
    assert "interrupted (resume with: torchlingo train CONFIG --resume)" in capsys.readouterr().err
    last = root / "runs" / "cut" / "checkpoints" / "last.pt"
    assert torch.load(last, weights_only=True)["position"]["step"] == 4

    assert main(["train", str(config), "--resume"]) == 0
    cut = json.loads((root / "runs" / "cut" / "metrics.json").read_text())
    assert cut["resumed"] and cut["steps"] == whole["steps"]
    # Exact resume: the resumed run ends with the uninterrupted run's weights and validation loss.
    assert cut["best_val_loss"] == pytest.approx(whole["best_val_loss"], abs=1e-6)
    a = torch.load(root / "runs" / "whole" / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(last, weights_only=True)["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_resume_refuses_a_different_model_shape(trained, capsys):
    root, run, _ = trained
    assert main(["train", str(root / "tiny.yaml"), "--resume", "--set", "d_model=32"]) == 2
    assert "d_model: the run in" in one_error_line(capsys.readouterr().err)


def test_translate_file_and_stdin(trained, monkeypatch, capsys):
    root, run, _ = trained
    best = str(run / "checkpoints" / "best.pt")
    src = root / "src.txt"
    src.write_text("the cat sees a dog\n\nthe red house\n")
    out = root / "out.txt"
    assert main(["translate", "--checkpoint", best, "--input", str(src), "--output", str(out), "--beam-size", "1"]) == 0
    lines = out.read_text().split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[3] == ""  # three lines out, the empty one kept empty
    assert lines[0] and lines[2]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(src.read_bytes()), encoding="utf-8"))
    capsys.readouterr()
    assert main(["translate", "--checkpoint", best, "--beam-size", "1"]) == 0
    assert capsys.readouterr().out == out.read_text()  # stdin to stdout gives the same as file to file
    one_at_a_time = root / "out1.txt"
    assert (
        main(
            [
                "translate",
                "--checkpoint",
                best,
                "--input",
                str(src),
                "--output",
                str(one_at_a_time),
                "--beam-size",
                "1",
                "--max-tokens",
                "4",
                "--parallel-batches",
                "1",
            ]
        )
        == 0
    )
    assert one_at_a_time.read_text() == out.read_text()
    args = build_parser().parse_args(
        ["translate", "--checkpoint", best, "--max-tokens", "4", "--parallel-batches", "3"]
    )
    translator = _translator(args)
    assert (translator.settings.decode_max_tokens, translator.settings.decode_parallel_batches) == (4, 3)
    assert translator.parallelism(10) == (3, max(1, torch.get_num_threads() // 3))
    args = build_parser().parse_args(["translate", "--checkpoint", best, "--quantize", "int8", "--max-sentences", "8"])
    assert (_translator(args).settings.quantize, _translator(args).settings.decode_max_sentences) == ("int8", 8)
    args = build_parser().parse_args(["translate", "--checkpoint", best, "--length-penalty", "1.25"])
    assert _translator(args).settings.length_penalty == 1.25


def test_translate_precision_flag(trained, capsys):
    """--amp picks the decoding precision; a precision this device cannot run is a one-line error."""
    root, run, _ = trained
    best = str(run / "checkpoints" / "best.pt")
    src = root / "src_amp.txt"
    src.write_text("the cat sees a dog\nthe red house\n")
    outputs = {}
    for amp in ("none", "bf16"):
        out = root / f"out_{amp}.txt"
        assert main(["translate", "--checkpoint", best, "--input", str(src), "--output", str(out), "--amp", amp]) == 0
        outputs[amp] = out.read_text().splitlines()
    assert len(outputs["none"]) == len(outputs["bf16"]) == 2
    capsys.readouterr()
    assert main(["translate", "--checkpoint", best, "--input", str(src), "--amp", "fp16", "--device", "cpu"]) == 2
    assert "amp: fp16 needs a CUDA device" in one_error_line(capsys.readouterr().err)


def test_evaluate_files_and_stdin_with_json(trained, monkeypatch, capsys):
    root, run, _ = trained
    best = str(run / "checkpoints" / "best.pt")
    rows = [ln.split("\t") for ln in (root / "data" / "test.tsv").read_text().splitlines()[1:]]
    (root / "test.src").write_text("".join(s + "\n" for s, _ in rows))
    (root / "test.ref").write_text("".join(t + "\n" for _, t in rows))
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                best,
                "--src",
                str(root / "test.src"),
                "--ref",
                str(root / "test.ref"),
                "--json",
            ]
        )
        == 0
    )
    scores = json.loads(capsys.readouterr().out)
    assert set(scores) == {"bleu", "bleu_signature", "chrf", "chrf_signature", "ter", "ter_signature"}
    # the run's own beam (2) on the same test set reproduces the BLEU that train wrote to metrics.json
    assert scores["bleu"] == pytest.approx(json.loads((run / "metrics.json").read_text())["test_bleu"])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((root / "test.src").read_bytes()), encoding="utf-8"))
    assert main(["evaluate", "--checkpoint", best, "--ref", str(root / "test.ref")]) == 0
    text = capsys.readouterr().out
    assert f"BLEU = {scores['bleu']:.2f}  nrefs:1|" in text and "chrF = " in text and "TER = " in text
    (root / "short.ref").write_text("one line\n")
    assert (
        main(["evaluate", "--checkpoint", best, "--src", str(root / "test.src"), "--ref", str(root / "short.ref")]) == 2
    )
    assert "has 10 lines but" in one_error_line(capsys.readouterr().err)


def test_python_dash_m_translates_stdin(trained):
    root, run, _ = trained
    proc = run_module(
        "translate",
        "--checkpoint",
        str(run / "checkpoints" / "best.pt"),
        "--beam-size",
        "2",
        stdin="the cat sees a dog\nthe red house\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 2 and "Traceback" not in proc.stderr


def test_download_multi30k_from_a_local_mirror(tmp_path, capsys):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    texts = {}
    for split in ("train", "val", "test_2016_flickr"):
        for lang, words in (("de", "ein Hund läuft"), ("en", "a dog runs")):
            texts[f"{split}.{lang}"] = "".join(f"{words} {i}\n" for i in range(3))
            (mirror / f"{split}.{lang}.gz").write_bytes(gzip.compress(texts[f"{split}.{lang}"].encode()))
    dest = tmp_path / "data" / "multi30k"
    assert main(["download", "multi30k", "--dest", str(dest), "--base-url", mirror.as_uri()]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(dest / name) for name in texts]
    for name, text in texts.items():
        assert (dest / name).read_text(encoding="utf-8") == text


def test_train_without_checkpoints_scores_the_final_model(tmp_path):
    root = write_corpus(tmp_path)
    assert main(["train", str(write_config(root, "nockpt", save_checkpoints=False, num_epochs=1))]) == 0
    metrics = json.loads((root / "runs" / "nockpt" / "metrics.json").read_text())
    assert metrics["test_checkpoint"] is None and metrics["test_sentences"] == 10 and 0 <= metrics["test_bleu"] <= 100
    assert not (root / "runs" / "nockpt" / "checkpoints").exists()
