"""Scratch files of a Beam stage: where batches of rows and arrays of keys wait between the steps of a stage.

A stage's elements are descriptors (a path and a row count), never rows: every text-bearing step reads its batch
from a file, works on it as an Arrow table or NumPy arrays, and writes what it made to another file. Beam's local
runner holds every PCollection that crosses a fusion break (a GroupByKey, a side input) in memory until the next
step has run, so a shuffle of rows held the whole dataset in the runner process; a shuffle of paths holds a few
bytes per batch. It is also what makes a stage cheap per row: Beam's cost per element is paid once per batch.

Arrow IPC files hold tables (written in record batches of ``batch_rows`` so that a reader can take a slice
without the rest), ``.npz`` files hold arrays. Paths go through fsspec, so a ``gs://`` scratch folder serves a
Dataflow job's workers as a local one serves the local runner's. Local files are memory-mapped for reading:
taking a few rows of a large file touches only their pages.
"""

from __future__ import annotations

import io
import os
import posixpath
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from .paths import is_remote

SCRATCH = "_scratch"  # the scratch folder inside a stage's output folder; removed before the output is committed


def scratch_dir(out: str) -> str:
    return posixpath.join(out, SCRATCH)


def _local(path: str) -> str:
    return path.removeprefix("file://")


def _open_write(path: str):
    import fsspec

    if not is_remote(path):
        try:
            return open(_local(path), "wb")  # noqa: SIM115 (closed by the caller's with)
        except FileNotFoundError:  # its folder is made on first use (one makedirs per folder, not per file)
            os.makedirs(os.path.dirname(_local(path)), exist_ok=True)
            return open(_local(path), "wb")  # noqa: SIM115
    return fsspec.open(path, "wb").open()


def write_table(path: str, table: pa.Table, batch_rows: int = 1024) -> str:
    """``table`` as an Arrow IPC file at ``path`` (folders made as needed), in record batches of ``batch_rows``. A
    table of many small chunks (slices gathered by a merge) is combined first: every record batch costs its
    metadata when the file is read, and a million one-row batches took gigabytes to open."""
    if table.num_columns and table.column(0).num_chunks > 2 * (table.num_rows // max(batch_rows, 1) + 1):
        table = table.combine_chunks()
    with _open_write(path) as fh, pa.ipc.new_file(fh, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=batch_rows):
            writer.write_batch(batch)
    return path


def _open_read(path: str, mapped: bool = True):
    """A local file mapped (zero-copy reads) or opened plainly (``mapped=False``); a remote one through fsspec."""
    import fsspec

    if not is_remote(path):
        return pa.memory_map(_local(path), "r") if mapped else pa.OSFile(_local(path), "rb")
    return fsspec.open(path, "rb").open()


def read_table(path: str, columns: list[str] | None = None) -> pa.Table:
    """The whole table of an IPC file (zero-copy when local: its buffers map the file)."""
    with _open_read(path) as fh:
        table = pa.ipc.open_file(fh).read_all()
    return table.select(columns) if columns else table


def iter_batches(path: str) -> Iterator[pa.RecordBatch]:
    """The record batches of an IPC file, one at a time, each read into memory (a local file is not mapped: a
    merge walks many files to their ends at once, and every mapped page it touched counted in the process's
    memory until the file was closed: 860 MiB at the start of mine at 1M documents)."""
    with _open_read(path, mapped=False) as fh:
        reader = pa.ipc.open_file(fh)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)


def write_arrays(path: str, **arrays: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with _open_write(path) as fh:
        fh.write(buffer.getvalue())
    return path


def read_arrays(path: str) -> dict[str, np.ndarray]:
    import fsspec

    opener = open(_local(path), "rb") if not is_remote(path) else fsspec.open(path, "rb").open()
    with opener as fh, np.load(io.BytesIO(fh.read()), allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def concat_arrays(paths: list[str], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays ``names`` of every file in ``paths``, concatenated (empty arrays when there are none)."""
    parts = [read_arrays(path) for path in sorted(paths)]
    return {name: np.concatenate([p[name] for p in parts]) if parts else np.zeros(0, np.int64) for name in names}


def remove(paths: list[str] | str) -> None:
    """Delete scratch files or folders (a missing one is no error: a retried bundle may have removed it)."""
    import shutil

    import fsspec

    for path in [paths] if isinstance(paths, str) else paths:
        if not is_remote(path):
            local = _local(path)
            if os.path.isdir(local):
                shutil.rmtree(local, ignore_errors=True)
            elif os.path.exists(local):
                os.remove(local)
            continue
        fs, _, (found,) = fsspec.get_fs_token_paths(path)
        if fs.exists(found):
            fs.rm(found, recursive=True)
