"""benchmarks/train_speed.py's fairseq row reads fairseq's own log; these are lines fairseq 0.12 printed here."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOG = """\
2026-12-03 17:47:44 | INFO | fairseq_cli.train | begin training epoch 1
2026-12-03 17:47:58 | INFO | train_inner | {"epoch": 1, "update": 0.051, "wps": "1766", "ups": "0.81", \
"wpb": "2223.5", "bsz": "156.8", "num_updates": "10"}
2026-12-03 17:48:10 | INFO | train_inner | {"epoch": 1, "update": 0.102, "wps": "1974.2", "ups": "0.81", \
"wpb": "2425.6", "bsz": "192.8", "num_updates": "20"}
2026-12-03 17:48:21 | INFO | train_inner | {"epoch": 1, "update": 0.153, "wps": "2043.5", "ups": "0.9", \
"wpb": "2272.6", "bsz": "125.6", "num_updates": "30"}
2026-12-03 17:48:32 | INFO | train | {"epoch": 1, "train_loss": "14.348", "train_wps": "1993.4", "train_wpb": "2309.2"}
"""


def load_script():
    spec = importlib.util.spec_from_file_location("train_speed", ROOT / "benchmarks" / "train_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fairseq_speed_is_words_over_seconds_of_the_intervals_after_the_first():
    speed = load_script().fairseq_speed(LOG)
    words = 24256.0 + 22726.0  # 10 updates x wpb, updates 11-30
    seconds = 24256.0 / 1974.2 + 22726.0 / 2043.5
    assert speed["steps"] == 20
    assert speed["tok_s"] == pytest.approx(words / seconds)
    assert speed["seconds"] == pytest.approx(seconds)
    assert speed["wpb"] == pytest.approx((2425.6 + 2272.6) / 2)
    assert 1974.2 < speed["tok_s"] < 2043.5  # the first interval's 1766 (start-up) is left out


def test_a_fairseq_log_without_two_intervals_is_an_error():
    with pytest.raises(ValueError, match="fewer than two train_inner"):
        load_script().fairseq_speed(LOG.splitlines()[1])


def test_the_matmul_peaks_keep_the_best_of_the_repeats(monkeypatch):
    """One slow minute must not set the MFU scale: each repeat measures again and the higher reading stays."""
    script = load_script()
    readings = iter([80.0, 9.0, 60.0, 12.0, 90.0, 11.0])  # fp32, bf16 per call, three repeats
    monkeypatch.setattr(script, "matmul_peak", lambda dtype_name, threads: next(readings))
    peaks: dict = {}
    for _ in range(3):
        script.update_peaks(peaks, 2)
    assert peaks == {"fp32": 90.0, "bf16": 12.0}
