"""Reading evaluation files in the formats the sets ship in: TSV / CSV, JSON lines, a JSON array or object,
Parquet, and HF ``datasets`` saved to disk. Each reader yields ``(line, record)``, so that a bad record is
reported as ``file:line`` in one ``error:`` line."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cmtp.schemas.errors import CmtpError

TABLE_SUFFIXES = {".tsv", ".txt", ".data", ".csv"}


class EvalDataError(CmtpError):
    """An evaluation file that cannot be read, named with its line."""


def _open_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EvalDataError(f"{path}: not UTF-8 text ({exc})") from exc
    except OSError as exc:
        raise EvalDataError(f"{path}: {exc.strerror or exc}") from exc


def read_json_records(path: Path) -> Iterator[tuple[int, Any]]:
    """JSON lines, or one JSON array (each item a record), or one JSON object (one record)."""
    text = _open_text(path)
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EvalDataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
        yield from ((i + 1, item) for i, item in enumerate(data))
        return
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        return
    try:
        json.loads(lines[first])
    except json.JSONDecodeError:  # not JSON lines: one (pretty-printed) JSON object
        try:
            yield 1, json.loads(text)
        except json.JSONDecodeError as exc:
            raise EvalDataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
        return
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalDataError(f"{path}:{number}: invalid JSON line ({exc.msg})") from exc


def read_table_rows(path: Path, header: bool) -> Iterator[tuple[int, dict[Any, str]]]:
    """Tab- (or, for .csv, comma-) separated rows as {column name or index: value}."""
    text = _open_text(path)
    reader = csv.reader(io.StringIO(text), delimiter="," if path.suffix == ".csv" else "\t",
                        quoting=csv.QUOTE_MINIMAL if path.suffix == ".csv" else csv.QUOTE_NONE)
    names = None
    for number, row in enumerate(reader, start=1):
        if not row or not any(cell.strip() for cell in row):
            continue
        if header and names is None:
            names = [c.strip() for c in row]
            continue
        record: dict[Any, str] = dict(enumerate(row))
        if names:
            record.update({n: v for n, v in zip(names, row, strict=False)})
        yield number, record


def read_parquet_rows(path: Path) -> Iterator[tuple[int, dict]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # ArrowInvalid, OSError: not (complete) Parquet
        raise EvalDataError(f"{path}: not a readable Parquet file ({exc})") from exc
    yield from ((i + 1, row) for i, row in enumerate(table.to_pylist()))


def read_hf_disk(path: Path, split: str | None) -> Iterator[tuple[int, dict]]:
    """A ``datasets`` dataset saved with ``save_to_disk`` (a Dataset, or a DatasetDict and its split)."""
    try:
        from datasets import DatasetDict, load_from_disk
    except ImportError as exc:
        raise EvalDataError(f"{path}: reading a saved HF dataset needs `pip install datasets`") from exc
    data = load_from_disk(str(path))
    if isinstance(data, DatasetDict):
        if split is None:
            split = "test" if "test" in data else next(iter(data))
        if split not in data:
            raise EvalDataError(f"{path}: no split {split!r} (has {', '.join(data)})")
        data = data[split]
    yield from ((i + 1, row) for i, row in enumerate(data))


def is_hf_disk(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()
                              or (path / "state.json").exists())


def read_records(path: Path, header: bool = False, split: str | None = None) -> Iterator[tuple[int, Any]]:
    """Records of any supported file, by its suffix (or a saved HF dataset directory)."""
    if is_hf_disk(path):
        yield from read_hf_disk(path, split)
    elif not path.exists():
        raise EvalDataError(f"{path}: no such file")
    elif path.suffix == ".parquet":
        yield from read_parquet_rows(path)
    elif path.suffix in TABLE_SUFFIXES:
        yield from read_table_rows(path, header)
    else:
        yield from read_json_records(path)
