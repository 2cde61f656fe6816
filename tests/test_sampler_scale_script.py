"""benchmarks/sampler_scale.py measures the sampler on a small synthetic corpus and prints one JSON line a size."""

import json

from cli_helpers import load_benchmark


def test_sampler_scale_measures_a_small_corpus(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["sampler_scale.py", "--one", "20000", "--max-tokens", "1000"])
    load_benchmark("sampler_scale").main()
    row = json.loads(capsys.readouterr().out)
    assert row["pairs"] == 20000 and 20000 / 1000 * 2 < row["batches"] < 20000
    assert row["seconds"] >= 0 and row["peak_mb"] >= 0 and row["kept_mb"] >= -50  # RSS may shrink a little
