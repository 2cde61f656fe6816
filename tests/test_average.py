"""After training: step checkpoints (keep_checkpoints), `torchlingo average`, and average_last in `torchlingo train`."""

import json

import pytest
import torch
from cli_helpers import write_config, write_corpus

from torchlingo.checkpoint import average_checkpoints, load_checkpoint, load_model, save_checkpoint
from torchlingo.cli import main
from torchlingo.errors import CheckpointError


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run keeping its last 3 step checkpoints (last.pt every 2 steps) and scoring the average of 2."""
    root = write_corpus(tmp_path_factory.mktemp("avg"))
    config = write_config(root, "avg", keep_checkpoints=3, average_last=2, checkpoint_interval=2, num_epochs=3)
    assert main(["train", str(config)]) == 0
    return root, root / "runs" / "avg"


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("torchlingo: error: "), err
    return lines[0]


def test_keeps_the_last_step_checkpoints_and_reports_both_scores(run):
    _, run_dir = run
    steps = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*.pt"))
    assert len(steps) == 3
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert steps[-1] == f"step_{last['position']['step']:06d}.pt"
    newest = load_checkpoint(run_dir / "checkpoints" / steps[-1])["model"]
    assert all(torch.equal(newest[k], v) for k, v in last["model"].items())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "test_bleu" in metrics and "test_bleu_averaged" in metrics and "test_chrf_averaged" in metrics
    assert metrics["test_averaged_from"] == [str(run_dir / "checkpoints" / s) for s in steps[-2:]]
    assert (run_dir / "test.averaged.hyp").is_file()


def test_average_of_copies_is_the_checkpoint_and_of_two_the_mean(run, tmp_path):
    _, run_dir = run
    a, b = sorted((run_dir / "checkpoints").glob("step_*.pt"))[:2]  # the last step's learning rate is 0 (cosine)
    assert main(["average", "--checkpoints", str(a), str(a), str(a), "--output", str(tmp_path / "same.pt")]) == 0
    same, orig = load_checkpoint(tmp_path / "same.pt")["model"], load_checkpoint(a)["model"]
    assert all(torch.equal(same[k], orig[k]) for k in orig)
    assert main(["average", "--checkpoints", str(a), str(b), "--output", str(tmp_path / "mean.pt")]) == 0
    mean, sa, sb = (load_checkpoint(p)["model"] for p in (tmp_path / "mean.pt", a, b))
    for key, value in mean.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, ((sa[key].double() + sb[key].double()) / 2).to(value.dtype))
    assert any(not torch.equal(sa[k], sb[k]) for k in sa)  # the two differ, so the mean is a real test


def test_averaged_checkpoint_translates_and_evaluates(run, tmp_path, capsys):
    root, run_dir = run
    out = tmp_path / "avg.pt"
    assert main(["average", "--run", str(run_dir), "--last", "3", "--output", str(out)]) == 0
    capsys.readouterr()
    src = root / "data" / "src.txt"
    ref = root / "data" / "ref.txt"
    pairs = [ln.split("\t") for ln in (root / "data" / "test.tsv").read_text().splitlines()[1:]]
    src.write_text("".join(p[0] + "\n" for p in pairs))
    ref.write_text("".join(p[1] + "\n" for p in pairs))
    assert main(["translate", "--checkpoint", str(out), "--input", str(src), "--output", str(tmp_path / "hyp")]) == 0
    assert len((tmp_path / "hyp").read_text().splitlines()) == len(pairs)
    assert main(["evaluate", "--checkpoint", str(out), "--src", str(src), "--ref", str(ref), "--json"]) == 0
    assert "bleu" in json.loads(capsys.readouterr().out)


def test_mismatched_shapes_and_vocabularies_are_refused_in_one_line(run, tmp_path, capsys):
    root, run_dir = run
    last = run_dir / "checkpoints" / "last.pt"
    other = write_config(root, "wide", d_model=32, num_epochs=1)
    assert main(["train", str(other)]) == 0
    capsys.readouterr()
    wide = root / "runs" / "wide" / "checkpoints" / "last.pt"
    assert main(["average", "--checkpoints", str(last), str(wide), "--output", str(tmp_path / "x.pt")]) == 2
    assert "d_model" in error_line(capsys)
    state = load_checkpoint(last)
    tokens = list(state["tgt_vocab"]["tokens"])
    tokens[-1], tokens[-2] = tokens[-2], tokens[-1]
    save_checkpoint({**state, "tgt_vocab": {**state["tgt_vocab"], "tokens": tokens}}, tmp_path / "swapped.pt")
    assert main(["average", "--checkpoints", str(last), str(tmp_path / "swapped.pt"), "--output", "y.pt"]) == 2
    assert "tgt vocabulary differs" in error_line(capsys)
    with pytest.raises(CheckpointError, match="fewer than the 9"):
        main_average_last(run_dir, 9)
    assert main(["average", "--run", str(run_dir), "--output", str(tmp_path / "z.pt")]) == 2
    assert "--last" in error_line(capsys)
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "z.pt").exists()


def main_average_last(run_dir, n):
    from torchlingo.checkpoint import last_checkpoints

    return average_checkpoints(last_checkpoints(run_dir, n))


def test_averaged_model_loads(run):
    _, run_dir = run
    model, src_vocab, tgt_vocab, state = load_model(run_dir / "averaged.pt")
    assert len(state["averaged_from"]) == 2 and "optimizer" not in state and len(tgt_vocab) > 4


def test_translate_and_evaluate_with_an_ensemble_of_checkpoints(run, tmp_path, capsys):
    root, run_dir = run
    a, b = sorted((run_dir / "checkpoints").glob("step_*.pt"))[:2]
    src = tmp_path / "src.txt"
    test_lines = (root / "data" / "test.tsv").read_text().splitlines()[1:]
    src.write_text("".join(ln.split("\t")[0] + "\n" for ln in test_lines))
    outs = {}
    for name, ckpts in (("one", [a]), ("twice", [a, a]), ("two", [a, b])):
        args = [x for c in ckpts for x in ("--checkpoint", str(c))]
        assert main(["translate", *args, "--input", str(src), "--output", str(tmp_path / name)]) == 0
        outs[name] = (tmp_path / name).read_text()
    assert outs["one"] == outs["twice"]  # the mean of identical log-probabilities is that model's
    assert len(outs["two"].splitlines()) == len(src.read_text().splitlines())
    state = load_checkpoint(a)
    tokens = list(state["tgt_vocab"]["tokens"])
    tokens[-1], tokens[-2] = tokens[-2], tokens[-1]
    save_checkpoint({**state, "tgt_vocab": {**state["tgt_vocab"], "tokens": tokens}}, tmp_path / "swapped.pt")
    capsys.readouterr()
    argv = ["translate", "--checkpoint", str(a), "--checkpoint", str(tmp_path / "swapped.pt"), "--input", str(src)]
    assert main(argv) == 2
    assert "target vocabulary differs" in error_line(capsys)


def test_average_last_of_a_short_run_averages_what_it_kept(tmp_path):
    root = write_corpus(tmp_path)
    config = write_config(root, "short", keep_checkpoints=50, average_last=50, num_epochs=2)
    assert main(["train", str(config)]) == 0  # two saves (the epoch ends): both are averaged
    metrics = json.loads((root / "runs" / "short" / "metrics.json").read_text())
    assert len(metrics["test_averaged_from"]) == 2 and "test_bleu_averaged" in metrics


def test_average_last_needs_enough_kept_checkpoints():
    from torchlingo.config import Config
    from torchlingo.errors import ConfigError

    with pytest.raises(ConfigError, match="keep_checkpoints: 3"):
        Config(keep_checkpoints=2, average_last=3)
