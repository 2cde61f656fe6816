"""benchmarks/ddp_scaling.py --quick runs end to end (one process, then 2 ranks under torchrun) and prints its table."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ddp_scaling_quick_prints_one_table_with_the_reference_and_the_ddp_row():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ddp_scaling.py"), "--quick"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| run | processes x threads |") and rows[0].endswith("| scaling efficiency |")
    assert rows[1].startswith("| 1 process (reference) | 1 x 2 | 400 |") and rows[1].endswith("| 100% |")
    assert rows[2].startswith("| DDP, gloo, 2 ranks | 2 x 1 | 200 |")
