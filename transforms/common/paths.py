"""A stage input as Parquet files: the one rule every reader follows (score, dedup, mine, audit, the trainer).

A path is a Parquet file, a glob, or a folder (local, gs://, s3://, any fsspec URL). A folder written by a stage
is read through its data subfolder (``prefer``: ``pairs/`` of extract and dedup, ``kept/`` of score, ...): the
first of those that holds Parquet files wins, and its siblings such as ``dead_letters/`` are left out. Any other
folder gives every Parquet file below it. The result is sorted, so readers are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

from cmtp.schemas.errors import CmtpError

_GLOB = "*?["


def is_remote(path: str) -> bool:
    """A URL of an object store (``gs://``, ``s3://``, ...), not a local path (``file://`` is local)."""
    return "://" in str(path) and not str(path).startswith("file://")


def beam_pattern(pattern: str) -> str:
    """A local glob as Beam's file systems match it: with no folder part (``*.json``) Beam's local file system
    matches nothing (apache/beam#19741), so it is written ``./*.json``."""
    if not is_remote(pattern) and "/" not in pattern and any(c in pattern for c in _GLOB):
        return "./" + pattern
    return pattern


def _url(fs, path: str) -> str:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return path if protocol in ("file", "local") else f"{protocol}://{path}"


def parquet_files(path: str, prefer: tuple[str, ...] | list[str] = (), every: bool = False) -> list[str]:
    """Sorted Parquet files behind ``path``; an error naming the path when there are none. ``every``: take the
    files of every ``prefer`` subfolder that has some (score's ``kept/`` and ``rejected/``), not the first."""
    import fsspec

    try:
        fs, _, roots = fsspec.get_fs_token_paths(path)
    except (ValueError, ImportError) as exc:  # an unknown protocol, or its filesystem package is missing
        raise CmtpError(f"cannot read {path}: {exc}") from exc
    files: list[str] = []
    for root in roots:
        if any(c in path for c in _GLOB) or not fs.isdir(root):
            if fs.exists(root):
                files.append(root)
            continue
        base = root.rstrip("/")
        chosen: list[str] = []
        for sub in prefer:
            found = [f for f in fs.find(f"{base}/{sub}") if f.endswith(".parquet")] if fs.isdir(f"{base}/{sub}") \
                else []
            chosen += found
            if found and not every:
                break
        if prefer and not chosen and fs.isfile(f"{base}/manifest.json"):  # read whole, its dead letters led
            raise CmtpError(f"{path} is a stage's output without {' or '.join(f'{p}/' for p in prefer)}: give the "
                            "output of a stage that writes one (or the Parquet files themselves)")
        files += chosen or [f for f in fs.find(base) if f.endswith(".parquet")]
    if not files:
        raise CmtpError(f"no Parquet files under {path}" + (f" (looked in {', '.join(prefer)} first)" if prefer
                                                             else ""))
    return sorted(_url(fs, f) for f in set(files))


def files_matching(pattern: str) -> list[str]:
    """The files a path or glob gives (any fsspec URL), sorted: a path as it is written, a glob's matches; an error
    naming it when there are none (a missing --labeled file was a bare FileNotFoundError)."""
    import fsspec

    try:
        fs, _, found = fsspec.get_fs_token_paths(pattern)
    except (ValueError, ImportError) as exc:
        raise CmtpError(f"cannot read {pattern}: {exc}") from exc
    if not any(c in pattern for c in _GLOB):
        files = [pattern] if fs.isfile(found[0]) else []
    else:
        files = sorted(_url(fs, f) for f in found if fs.isfile(f))
    if not files:
        raise CmtpError(f"no files match {pattern}")
    return files


@dataclass(frozen=True)
class RowGroup:
    """One row group of a Parquet file: the unit of work of the Beam readers and of the training stream."""

    path: str
    row_group: int
    rows: int


def row_groups(files: list[str], columns: tuple[str, ...] = (), schema: str = "") -> list[RowGroup]:
    """Every row group of the files, in file order, from their footers (any fsspec URL). A file that is not
    (complete) Parquet, or lacks one of ``columns`` (of the named ``schema``), is one error naming it, before any
    pipeline starts."""
    import fsspec
    import pyarrow.parquet as pq

    out: list[RowGroup] = []
    for path in files:
        try:
            with fsspec.open(path, "rb") as fh:
                parquet = pq.ParquetFile(fh)
                meta, names = parquet.metadata, parquet.schema_arrow.names
        except Exception as exc:  # ArrowInvalid (empty or truncated file), OSError: not readable Parquet
            raise CmtpError(f"{path}: not a readable Parquet file ({exc})") from None
        missing = [c for c in columns if c not in names]
        if missing:
            expected = f"expected schema {schema}: " if schema else ""
            raise CmtpError(f"{path}: {expected}the file lacks column(s) {', '.join(missing)} "
                            f"(it has {', '.join(names) or 'none'})")
        out += [RowGroup(path, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
    return out
