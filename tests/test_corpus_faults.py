"""Messy corpora: every malformed line stops `bad_lines: error` with file and line, or is dropped and counted by
`bad_lines: skip`; nothing is dropped silently and odd-looking sentences ("NA", quotes) are kept as they are."""

import hashlib
import os
import threading
import tracemalloc
from pathlib import Path

import pytest

from torchlingo.config import Config
from torchlingo.data_processing import NMTDataset
from torchlingo.errors import DataError

CONFIG = Config(tokenizer="word")
GOOD = [b"a cat\tun gato", b"the dog\tel perro"]


def write(path: Path, lines: list[bytes], end: bytes = b"\n") -> Path:
    path.write_bytes(end.join(lines) + end)
    return path


# (bad line, reason counted by skip, text of the error) -- the bad line is line 2 of the file.
BAD_LINES = [
    (b"three\tcolumns\there", "wrong number of columns", "expected 2 tab-separated columns, found 3"),
    (b"no tab at all", "wrong number of columns", "expected 2 tab-separated columns, found 1"),
    (b"\tun gato", "empty source", "empty source"),
    (b"a cat\t   ", "empty target", "empty target"),
    (b"", "empty line", "empty line"),
    (b"caf\xe9\tcaf\xc3\xa9", "invalid UTF-8", "invalid UTF-8 at byte 4"),  # latin-1 e-acute in a UTF-8 file
]


@pytest.mark.parametrize("bad,reason,message", BAD_LINES, ids=[r[1] + str(i) for i, r in enumerate(BAD_LINES)])
def test_bad_line_policy_error_names_file_and_line(tmp_path, bad, reason, message):
    path = write(tmp_path / "c.tsv", [GOOD[0], bad, GOOD[1]])
    with pytest.raises(DataError) as info:
        NMTDataset(path, config=CONFIG)
    text = str(info.value)
    assert text.startswith(f"{path}:2: {message}") and "bad_lines: skip" in text and "\n" not in text


@pytest.mark.parametrize("bad,reason,message", BAD_LINES, ids=[r[1] + str(i) for i, r in enumerate(BAD_LINES)])
def test_bad_line_policy_skip_drops_and_reports(tmp_path, torchlingo_logs, bad, reason, message):
    path = write(tmp_path / "c.tsv", [GOOD[0], bad, GOOD[1], bad])
    ds = NMTDataset(path, config=CONFIG, bad_lines="skip")
    assert ds.src_texts == ["a cat", "the dog"] and ds.tgt_texts == ["un gato", "el perro"]
    assert ds.skipped == {reason: 2}
    report = torchlingo_logs.records[-1].getMessage()
    assert report == f"{path}: kept 2 pairs, skipped 2 (2 {reason} (first at {path}:2))"


def test_skip_report_counts_each_reason(tmp_path, torchlingo_logs):
    lines = [b"src\ttgt", GOOD[0], b"x\ty\tz", b"\xff\xfe\ty", b"\ty", b"x\t", b"x\t\xc3", GOOD[1], b"a\tb\tc"]
    path = write(tmp_path / "c.tsv", lines)
    ds = NMTDataset(path, config=CONFIG, bad_lines="skip")
    assert len(ds) == 2
    assert ds.skipped == {"wrong number of columns": 2, "invalid UTF-8": 2, "empty source": 1, "empty target": 1}
    assert torchlingo_logs.records[-1].getMessage() == (
        f"{path}: kept 2 pairs, skipped 6 (2 wrong number of columns (first at {path}:3), "
        f"2 invalid UTF-8 (first at {path}:4), 1 empty source (first at {path}:5), 1 empty target (first at {path}:6))"
    )


def test_all_lines_bad(tmp_path):
    path = write(tmp_path / "c.tsv", [b"x", b"y"])
    with pytest.raises(DataError, match=r"no sentence pairs found; all 2 lines were skipped as bad"):
        NMTDataset(path, config=CONFIG, bad_lines="skip")


def test_bom_and_crlf_are_not_part_of_the_text(tmp_path):
    path = write(tmp_path / "c.tsv", [b"\xef\xbb\xbfsrc\ttgt", *GOOD], end=b"\r\n")  # Windows Notepad's UTF-8
    ds = NMTDataset(path, config=CONFIG)
    assert ds.src_texts == ["a cat", "the dog"] and ds.tgt_texts == ["un gato", "el perro"]
    assert ds.skipped == {}
    no_header = write(tmp_path / "d.tsv", [b"\xef\xbb\xbf" + GOOD[0], GOOD[1]], end=b"\r\n")
    assert NMTDataset(no_header, config=CONFIG).src_texts == ["a cat", "the dog"]


def test_no_final_newline_and_mixed_line_ends(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_bytes(GOOD[0] + b"\r\n" + GOOD[1])
    assert NMTDataset(path, config=CONFIG).tgt_texts == ["un gato", "el perro"]


def test_na_null_and_quotes_are_sentences(tmp_path):
    lines = [b"NA\tNA", b"null\tnulo", b'"Hello," she said.\t"Hola", dijo.', b"'quoted\t'citado", b"None\t#N/A"]
    ds = NMTDataset(write(tmp_path / "c.tsv", lines), config=CONFIG)
    assert ds.src_texts == ["NA", "null", '"Hello," she said.', "'quoted", "None"]
    assert ds.tgt_texts == ["NA", "nulo", '"Hola", dijo.', "'citado", "#N/A"]
    assert len(ds) == 5 and ds.skipped == {}


def test_very_long_lines_are_filtered_by_max_len_and_reported(tmp_path, torchlingo_logs):
    long = " ".join(["cat"] * 5000).encode()
    path = write(tmp_path / "c.tsv", [GOOD[0], long + b"\tgato", b"dog\t" + long, GOOD[1]])
    ds = NMTDataset(path, config=CONFIG, max_len=50)
    assert ds.src_texts == ["a cat", "the dog"]
    assert ds.skipped == {"longer than max_len=50 tokens": 2}
    assert "skipped 2 (2 longer than max_len=50 tokens)" in torchlingo_logs.records[-1].getMessage()
    # Without max_len the 5000-token sides are more than the model takes (max_positions 1024): bad lines.
    with pytest.raises(DataError, match=rf"{path}:2: source of 5000 tokens, more than the model's max_positions=1024"):
        NMTDataset(path, config=CONFIG)
    skipping = NMTDataset(path, config=CONFIG, bad_lines="skip")
    assert skipping.src_texts == ["a cat", "the dog"] and skipping.skipped == {"longer than the model takes": 2}
    assert len(NMTDataset(path, config=Config(tokenizer="word", max_positions=5002, max_len=5000))) == 4
    with pytest.raises(DataError, match="every pair has a side longer than max_len=1 tokens"):
        NMTDataset(path, config=CONFIG, max_len=1)


def test_parallel_files_of_different_lengths(tmp_path):
    src = write(tmp_path / "train.de", [b"ein Hund", b"eine Katze", b"drei"])
    tgt = write(tmp_path / "train.en", [b"a dog", b"a cat"])
    for policy in ("error", "skip"):  # misaligned files cannot be repaired by dropping lines
        with pytest.raises(DataError, match=rf"{src} has 3 lines but {tgt} has 2; parallel files"):
            NMTDataset((src, tgt), config=CONFIG, bad_lines=policy)


def test_parallel_files_bad_lines(tmp_path, torchlingo_logs):
    src = write(tmp_path / "train.de", [b"\xef\xbb\xbfein Hund", b"", b"caf\xe9", b"drei"], end=b"\r\n")
    tgt = write(tmp_path / "train.en", [b"a dog", b"two", b"coffee", b""])
    with pytest.raises(DataError, match=rf"{src}:2: empty source"):
        NMTDataset((src, tgt), config=CONFIG)
    config = Config(tokenizer="word", src_lang="de", tgt_lang="en", bad_lines="skip")
    ds = NMTDataset(tmp_path / "train", config=config)  # prefix + language suffixes
    assert ds.src_texts == ["ein Hund"] and ds.tgt_texts == ["a dog"]
    assert ds.skipped == {"empty source": 1, "invalid UTF-8": 1, "empty target": 1}
    assert f"1 empty target (first at {tgt}:4)" in torchlingo_logs.records[-1].getMessage()


def test_bad_lines_policy_from_config(tmp_path):
    path = write(tmp_path / "c.tsv", [GOOD[0], b"bad", GOOD[1]])
    assert len(NMTDataset(path, config=Config(tokenizer="word", bad_lines="skip"))) == 2
    with pytest.raises(DataError, match=":2: expected 2 tab-separated columns, found 1"):
        NMTDataset(path, config=Config(tokenizer="word"))  # the default is error


def test_reading_is_streamed(tmp_path):
    """An 8 MB file of which two lines are kept is never held in memory at once."""
    path = tmp_path / "big.tsv"
    with path.open("wb") as f:
        f.write(GOOD[0] + b"\n" + (b"x" * 79 + b"\n") * 100_000 + GOOD[1] + b"\n")
    tracemalloc.start()
    try:
        ds = NMTDataset(path, config=CONFIG, bad_lines="skip")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ds.src_texts == ["a cat", "the dog"] and ds.skipped == {"wrong number of columns": 100_000}
    assert peak < 2_000_000, peak
    assert ds.fingerprint == [
        {
            "file": "big.tsv",
            "bytes": path.stat().st_size,
            "lines": 100_002,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
    ]


def test_a_fifo_is_read_as_a_file(tmp_path):
    """A named pipe is a file (not a prefix for src_lang/tgt_lang), read as it comes."""
    fifo = tmp_path / "train.tsv"
    os.mkfifo(fifo)
    data = b"\n".join(GOOD) + b"\n"
    writer = threading.Thread(target=fifo.write_bytes, args=(data,), daemon=True)
    writer.start()
    ds = NMTDataset(fifo, config=Config(tokenizer="word", src_lang="de", tgt_lang="en"))
    writer.join(timeout=10)
    assert ds.src_texts == ["a cat", "the dog"] and ds.fingerprint[0]["bytes"] == len(data)
