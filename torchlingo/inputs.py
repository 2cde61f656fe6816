"""What `translate` and `evaluate` read: plain text (one sentence a line) or the project's two-column TSV.

A file is TSV when its name ends in `.tsv`, when its first line is a header (`src<TAB>tgt` or `source<TAB>target`,
as the data/ files have), or when every non-empty line has exactly one tab. The header is skipped; the source is the
first column, the reference the second. Like the training data, TSV is read without quote processing.
"""

from __future__ import annotations

from pathlib import Path

from .errors import DataError

HEADERS = {("src", "tgt"), ("source", "target")}
SOURCE, TARGET = 0, 1


def _is_header(line: str) -> bool:
    return tuple(c.strip().lower() for c in line.split("\t")) in HEADERS


def looks_like_tsv(name: str, lines: list[str]) -> bool:
    """Whether `lines` (read from `name`) are the two-column TSV rather than plain text."""
    if name.lower().endswith(".tsv") or (lines and _is_header(lines[0])):
        return True
    filled = [ln for ln in lines if ln.strip()]
    return bool(filled) and all(ln.count("\t") == 1 for ln in filled)


def tsv_column(name: str, lines: list[str], column: int) -> list[str]:
    """Column `column` (0: source, 1: target) of TSV lines, header dropped; a line without two columns is an error
    naming file and line. An empty line stays an empty sentence, so the output stays aligned with the input."""
    start = 1 if lines and _is_header(lines[0]) else 0
    out = []
    for n, line in enumerate(lines[start:], start=start + 1):
        if not line.strip():
            out.append("")
            continue
        cols = line.split("\t")
        if len(cols) != 2:
            raise DataError(
                f"{name}:{n}: expected 2 tab-separated columns (source, target), found {len(cols)}; "
                "a TSV file has one pair a line"
            )
        out.append(cols[column].strip())
    return out


def column(name: str, lines: list[str], which: int) -> list[str]:
    """The sentences of a file read for `translate` / `evaluate`: the TSV's column `which`, or the lines of text."""
    return tsv_column(name, lines, which) if looks_like_tsv(name, lines) else lines


def checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file, or a run directory standing for its checkpoints/best.pt (last.pt when there is no best)."""
    path = Path(path)
    if not path.is_dir():
        return path
    for name in ("checkpoints/best.pt", "checkpoints/last.pt"):
        if (path / name).is_file():
            return path / name
    raise DataError(
        f"{path}: is a directory, not a checkpoint file nor a run directory with checkpoints/best.pt; pass a "
        "checkpoint file (e.g. runs/base/checkpoints/best.pt) or a run directory (runs/base)"
    )


def run_test_set(run_dir: str | Path) -> tuple[str, str]:
    """(source, reference) files of a run's test set, from RUN_DIR/config.yaml: the TSV twice, or the two text
    files of a parallel pair."""
    from .config import Config
    from .data_processing import resolve_data_path

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise DataError(f"{run_dir}: not a run directory (no config.yaml); pass the directory training wrote")
    config = Config.from_yaml(run_dir / "config.yaml")
    if not config.test_file:
        raise DataError(f"{run_dir / 'config.yaml'}: test_file is not set; give --src and --ref instead")
    data = resolve_data_path(config.test_file, config.src_lang, config.tgt_lang)
    return (str(data[0]), str(data[1])) if isinstance(data, tuple) else (str(data), str(data))
