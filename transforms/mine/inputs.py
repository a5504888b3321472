"""Reading the mine stage's inputs: scored pairs, labeled query/pos/neg files, and the candidate pool.

A labeled ``pos`` given as one string is one positive (never a list of characters); a row without a query or
a positive becomes a dead letter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import islice

import fsspec
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from cmtp.schemas.errors import CmtpError
from cmtp.schemas.validate import training_example_problems
from cmtp.transforms.common.dead_letters import dead_letter
from cmtp.transforms.common.ids import stable_id
from cmtp.transforms.common.paths import parquet_files, row_groups

from .example_store import EXAMPLE_SCHEMA, Example, example_table

STAGE = "mine"
CHUNK_ROWS = 16384  # labeled rows read at a time


def _as_texts(value, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]  # one positive, not its characters
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"{name} must be a string or a list of strings, not {type(value).__name__}")


def read_pairs(path: str) -> Iterator[pa.Table]:
    """Examples (``EXAMPLE_SCHEMA``, a row group at a time) from scored (``kept/``) or plain pair Parquet: query =
    title, positive = passage."""
    files = parquet_files(path, ("kept", "pairs"))
    # every footer and column checked first
    groups = row_groups(files, ("pair_id", "title", "passage", "source"), "pair")
    for group in groups:
        with fsspec.open(group.path, "rb") as fh:
            parquet = pq.ParquetFile(fh)
            columns = [c for c in ("pair_id", "title", "passage", "source", "cluster_id")
                       if c in parquet.schema_arrow.names]
            table = parquet.read_row_group(group.row_group, columns=columns)
        n = table.num_rows
        yield pa.table({
            "example_id": table.column("pair_id"), "query": table.column("title"),
            "pos": pa.ListArray.from_arrays(pa.array(range(n + 1), pa.int32()),
                                            table.column("passage").combine_chunks().cast(pa.string())),
            "source": table.column("source"), "task": pa.array(["retrieval"] * n, pa.string()),
            "neg": pa.array([[]] * n, pa.list_(pa.string())), "instruction": pa.nulls(n, pa.string()),
            "cluster_id": table.column("cluster_id") if "cluster_id" in columns else pa.nulls(n, pa.string())},
            schema=EXAMPLE_SCHEMA)


def _json_lines(path: str) -> Iterator[tuple[int, dict | Exception]]:
    """(line number, the object | why the line is not one) for every non-empty line of a JSON-lines file."""
    with fsspec.open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                try:  # bytes that are not UTF-8 are a ValueError too (UnicodeDecodeError)
                    obj = json.loads(line)
                    yield number, obj if isinstance(obj, dict) else ValueError("not a JSON object")
                except ValueError as exc:
                    yield number, exc


def _labeled_rows(path: str) -> Iterator[tuple[str, dict | Exception]]:
    if path.endswith(".parquet"):
        row_groups([path])  # not (complete) Parquet: one error naming the file
        with fsspec.open(path, "rb") as fh:
            number = 0
            for batch in pq.ParquetFile(fh).iter_batches(batch_size=CHUNK_ROWS):  # a batch at a time, not the file
                for row in batch.to_pylist():
                    yield str(number), row
                    number += 1
        return
    yield from ((f"L{number}", row) for number, row in _json_lines(path))


def labeled_chunks(path: str, task: str, dead: list[dict]) -> Iterator[pa.Table]:
    """Examples (``EXAMPLE_SCHEMA``, ``CHUNK_ROWS`` at a time) from a labeled JSON-lines or Parquet file (query,
    pos, neg[, prompt]); rows that cannot be used are appended to ``dead``."""
    rows = _labeled_examples(path, task, dead)
    while chunk := list(islice(rows, CHUNK_ROWS)):
        yield example_table(chunk)


def read_labeled(path: str, task: str) -> tuple[list[Example], list[dict]]:
    """Examples and dead letters of a labeled file, as lists (a small file)."""
    dead: list[dict] = []
    return list(_labeled_examples(path, task, dead)), dead


def _labeled_examples(path: str, task: str, dead: list[dict]) -> Iterator[Example]:
    source = path.rsplit("/", 1)[-1].split(".")[0]
    for key, row in _labeled_rows(path):
        if isinstance(row, Exception):
            dead.append(dead_letter(STAGE, "malformed_json", source, path, key, "", str(row)))
            continue
        try:  # a string is one passage, not its characters; blank passages are dropped
            query = row.get("query")
            pos = [p for p in _as_texts(row.get("pos"), "pos") if p.strip()]
            neg = [n for n in _as_texts(row.get("neg"), "neg") if n.strip()]
        except ValueError as exc:
            dead.append(dead_letter(STAGE, "bad_labeled_row", source, path, key, row, str(exc)))
            continue
        problems = training_example_problems({"query": query, "pos": pos, "neg": neg})
        if problems:
            dead.append(dead_letter(STAGE, "bad_labeled_row", source, path, key, row,
                                    "; ".join(f"{f}: {p}" for f, p in problems)))
            continue
        yield Example(stable_id(source, key, query), query, pos, row.get("source") or source,
                      row.get("type") or row.get("task") or task, neg, row.get("prompt") or row.get("instruction"))


def read_pool(path: str) -> Iterator[tuple[str, str | None]]:
    """(text, cluster id) of a separate pool: Parquet with ``passage`` or ``text``, or JSON lines."""
    if path.endswith(".jsonl") or path.endswith(".json"):
        for number, obj in _json_lines(path):
            if isinstance(obj, Exception):  # the pool is the user's reference set: a bad line is a mistake
                raise CmtpError(f"pool {path}:{number}: not a JSON object ({obj})")
            text = obj.get("text") or obj.get("passage")
            if isinstance(text, str) and text.strip():
                yield text, obj.get("cluster_id")
        return
    files = parquet_files(path, ("kept", "pairs", "pretrain"))
    row_groups(files)  # every footer read first: a file that is not Parquet is one error naming it
    dataset = ds.dataset(files, format="parquet")
    column = "passage" if "passage" in dataset.schema.names else "text"
    if column not in dataset.schema.names:
        raise CmtpError(f"pool {path} has neither a 'passage' nor a 'text' column")
    cols = [column] + (["cluster_id"] if "cluster_id" in dataset.schema.names else [])
    for batch in dataset.to_batches(columns=cols):
        texts = batch.column(column).to_pylist()
        clusters = batch.column("cluster_id").to_pylist() if "cluster_id" in cols else [None] * len(texts)
        for text, cluster in zip(texts, clusters, strict=True):
            if text and text.strip():
                yield text, cluster
