"""The shipped configs load and point at real data; the docs are generated from the code; the README's commands
are the ones CI runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import RUN_FILES

from torchlingo.config import Config
from torchlingo.data_processing import NMTDataset, resolve_data_path

REPO = Path(__file__).resolve().parents[1]
SHARED_MULTI30K = REPO.parent / "shared" / "data" / "multi30k"


def test_base_config_is_valid_and_its_data_exists(monkeypatch):
    monkeypatch.chdir(REPO)  # relative paths resolve against the working directory, as documented
    config = Config.from_yaml("configs/base.yaml")
    assert config.experiment_name == "base" and config.tokenizer == "word"
    for key in ("train_file", "val_file", "test_file"):
        path = resolve_data_path(getattr(config, key), config.src_lang, config.tgt_lang)
        assert Path(path).is_file(), f"{key}: {path}"
    test = NMTDataset(config.test_file, config=config)  # parses: two columns, a header, no bad line
    assert len(test) == 500


def test_main_job_command_runs_base_yaml_end_to_end(tmp_path):
    """The README's main job as a user runs it (the installed `torchlingo` script where there is one), shortened
    with --set to a few steps; the full run and its BLEU are measured in the README."""
    command = [shutil.which("torchlingo")] if shutil.which("torchlingo") else [sys.executable, "-m", "torchlingo"]
    overrides = ["max_steps=12", "beam_size=1", "log_interval=4", f"tensorboard_dir={tmp_path}"]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [*command, "train", "configs/base.yaml", *[a for o in overrides for a in ("--set", o)]],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"test BLEU = \d+\.\d+ +nrefs:1\|case:mixed\|eff:no\|tok:13a", proc.stdout + proc.stderr)
    run = tmp_path / "base"
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    assert list(run.glob("events.out.tfevents.*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 12 and 0 <= metrics["test_bleu"] <= 100
    assert len((run / "test.hyp").read_text().splitlines()) == 500


def test_multi30k_config_and_shared_path_override():
    config = Config.from_yaml(REPO / "configs" / "multi30k_de_en.yaml")
    assert (config.src_lang, config.tgt_lang, config.tokenizer, config.vocab_size, config.joint_vocab) == (
        "de",
        "en",
        "sentencepiece",
        8000,
        True,
    )
    assert (config.num_encoder_layers, config.num_decoder_layers, config.d_model, config.n_heads, config.d_ff) == (
        3,
        3,
        256,
        4,
        1024,
    )
    assert resolve_data_path(config.train_file, "de", "en") == (
        Path("data/multi30k/train.de"),
        Path("data/multi30k/train.en"),
    )
    sets = [
        f"{k}=../shared/data/multi30k/{v}"
        for k, v in (("train_file", "train"), ("val_file", "val"), ("test_file", "test_2016_flickr"))
    ]
    moved = Config.from_yaml(REPO / "configs" / "multi30k_de_en.yaml", sets)
    assert resolve_data_path(moved.test_file, "de", "en") == (
        Path("../shared/data/multi30k/test_2016_flickr.de"),
        Path("../shared/data/multi30k/test_2016_flickr.en"),
    )


@pytest.mark.slow
def test_multi30k_config_reads_the_shared_corpus(monkeypatch):
    """Needs ../shared/data/multi30k (not in the repository)."""
    monkeypatch.chdir(REPO)
    sets = [
        f"{k}=../shared/data/multi30k/{v}"
        for k, v in (("train_file", "train"), ("val_file", "val"), ("test_file", "test_2016_flickr"))
    ]
    config = Config.from_yaml("configs/multi30k_de_en.yaml", sets + ["tokenizer=word"])
    assert len(NMTDataset(config.val_file, config=config)) == 1014


def test_configuration_doc_is_up_to_date():
    proc = subprocess.run(
        [sys.executable, str(REPO / "docs" / "gen_configuration.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    text = (REPO / "docs" / "configuration.md").read_text()
    assert "| `learning_rate` | float | `0.0005` |" in text and "## `decoding:`" in text


def test_readme_commands_are_the_ones_ci_runs():
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"```bash\n(python3 -m venv .*)\n```", readme)
    assert len(commands) == 2
    main_job, tests = commands
    assert main_job.endswith("&& torchlingo train configs/base.yaml")
    ci = [
        ln.strip()
        for ln in (REPO / ".ci" / "run").read_text().splitlines()
        if ln.strip() and not ln.startswith("#") and not ln.startswith(("set ", "cd ", "rm "))
    ]
    # .ci/run runs the same steps as the README's test command (pip quietly, one step a line)
    assert " && ".join(ci).replace(" -q install", " install").replace("pip install -q", "pip install") == tests


def test_mkdocs_nav_pages_exist():
    """Every page in the nav exists, and every page of docs/ is in the nav (none reachable only by its address)."""
    nav = re.findall(r"^\s+- [^:]+: (\S+\.md)$", (REPO / "mkdocs.yml").read_text(), flags=re.M)
    pages = {p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.md")}
    assert set(nav) == pages and len(nav) == len(set(nav))
    assert {"reliability.md", "distributed.md", "large-corpora.md", "api/config.md", "api/evaluation.md"} <= pages


def test_training_doc_excerpts_are_the_code():
    """docs/training.md quotes Trainer methods; each quoted block is a verbatim part of torchlingo/training.py."""
    source = (REPO / "torchlingo" / "training.py").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(    def .*?)```", (REPO / "docs" / "training.md").read_text(), flags=re.S)
    assert [re.match(r"    def (\w+)", b).group(1) for b in blocks] == ["fit", "train_step"]
    for block in blocks:
        assert block in source


def test_readme_architecture_names_every_module():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"^\| `([\w/]+\.py)` \|", section, flags=re.M))
    package = REPO / "torchlingo"
    modules = {
        str(p.relative_to(package)) for p in package.rglob("*.py") if p.name not in ("__init__.py", "__main__.py")
    }
    assert named == modules
