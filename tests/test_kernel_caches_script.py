"""benchmarks/kernel_caches.py --quick trains both settings end to end and prints its table."""

from cli_helpers import load_benchmark


def test_kernel_caches_quick(capsys):
    assert load_benchmark("kernel_caches").main(["--quick"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == "4 steps of configs/base.yaml, 1 threads, best of 1:"
    rows = [line.split("|")[1:-1] for line in out[4:]]
    assert [r[0].strip() for r in rows] == ["bounded (64, the command's)", "default (1024)"]
    assert rows[1][2].strip() == "1.00x" and all(int(r[1]) > 0 and float(r[3]) > 50 for r in rows)
