"""Reading the mine stage's inputs: scored pairs, labeled query/pos/neg files, and the candidate pool.

A labeled ``pos`` given as one string is one positive (never a list of characters); a row without a query or
a positive becomes a dead letter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import fsspec
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from cmtp.schemas.errors import CmtpError
from cmtp.schemas.validate import training_example_problems
from cmtp.transforms.common.dead_letters import dead_letter
from cmtp.transforms.common.ids import stable_id
from cmtp.transforms.common.paths import parquet_files, row_groups

STAGE = "mine"


@dataclass
class Example:
    example_id: str
    query: str
    pos: list[str]
    source: str
    task: str
    neg: list[str] = field(default_factory=list)  # labeled negatives
    instruction: str | None = None
    cluster_id: str | None = None


def _as_texts(value, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]  # one positive, not its characters
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"{name} must be a string or a list of strings, not {type(value).__name__}")


def read_pairs(path: str) -> list[Example]:
    """Examples from scored (``kept/``) or plain pair Parquet: query = title, positive = passage."""
    files = parquet_files(path, ("kept", "pairs"))
    row_groups(files, ("pair_id", "title", "passage", "source"), "pair")  # every footer and column checked first
    examples = []
    for f in files:
        with fsspec.open(f, "rb") as fh:
            table = pq.read_table(fh, columns=None)
        for row in table.to_pylist():
            examples.append(Example(row["pair_id"], row["title"], [row["passage"]], row["source"], "retrieval",
                                    cluster_id=row.get("cluster_id")))
    return examples


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
            yield from ((str(i), row) for i, row in enumerate(pq.read_table(fh).to_pylist()))
        return
    yield from ((f"L{number}", row) for number, row in _json_lines(path))


def read_labeled(path: str, task: str) -> tuple[list[Example], list[dict]]:
    """Examples and dead letters from a labeled JSON-lines or Parquet file (query, pos, neg[, prompt])."""
    examples, dead = [], []
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
        examples.append(Example(stable_id(source, key, query), query, pos, row.get("source") or source,
                                row.get("type") or row.get("task") or task, neg,
                                row.get("prompt") or row.get("instruction")))
    return examples, dead


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
