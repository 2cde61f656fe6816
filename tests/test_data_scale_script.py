"""benchmarks/data_scale.py --quick runs end to end on data/train.tsv and prints its table."""

from cli_helpers import load_benchmark


def test_data_scale_quick(capsys):
    assert load_benchmark("data_scale").main(["--quick"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "prep 2w s" in lines[0] and "(in memory)" in lines[0]
    row = lines[2].split()
    assert row[0] == "x1" and int(row[1]) == 12000
    assert lines[3].startswith("prepare's phases") and lines[4].split()[:3] == ["x1", "1", "worker:"]
    assert "scan" in lines[4] and "encode" in lines[5] and lines[5].split()[1:3] == ["2", "workers:"]
