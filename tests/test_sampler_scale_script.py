"""benchmarks/sampler_scale.py measures the sampler on a small synthetic corpus and prints one JSON line a size."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sampler_scale.py"


def load_script():
    spec = importlib.util.spec_from_file_location("sampler_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sampler_scale_measures_a_small_corpus(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["sampler_scale.py", "--one", "20000", "--max-tokens", "1000"])
    load_script().main()
    row = json.loads(capsys.readouterr().out)
    assert row["pairs"] == 20000 and 20000 / 1000 * 2 < row["batches"] < 20000
    assert row["seconds"] >= 0 and row["peak_mb"] >= 0 and row["kept_mb"] >= -50  # RSS may shrink a little
