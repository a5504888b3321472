"""The training sets a proxy audit compares: each threshold's kept pairs, no filter, a random subset of the same size
per threshold, and other inputs given by name (pairs, or mine's training examples with their hard negatives); all
sampled the same seeded way, with a held-out slice kept out.

Sampling is by hash, not by a random generator over rows: every pair gets a key ``blake2b(seed, pair_id)``, and a
variant's sample is the ``n`` eligible pairs with the smallest keys. So it is one streaming pass with bounded
memory (``n`` candidates per variant, at any row count), independent of file order and sharding, and the variants
of one seed share their random numbers (a filtered sample is the no-filter sample restricted to kept pairs, as far
as sizes allow), which removes sampling noise from their comparison. A random same-size control of a threshold
keeping ``K`` pairs is ``min(n, K)`` pairs drawn from every pair: a random ``K``-subset sampled to ``n``.

The held-out slice is the ``holdout`` pairs with the smallest keys under a seed-independent salt: the same for
every seed and variant, never trained on, evaluated as retrieval (titles against passages).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from cmtp.schemas.errors import CmtpError
from cmtp.transforms.common.paths import parquet_files

from .stats import stream

TEXT_COLUMNS = ["pair_id", "title", "passage", "source"]
EXAMPLE_COLUMNS = [*TEXT_COLUMNS, "neg"]  # an example as the proxy trains on it: its first positive, its negatives
# a stage folder given as NAME=PATH: extract/dedup's pairs/, score's kept/, mine's examples/
INPUT_SUBDIRS = ("pairs", "kept", "examples")
HOLDOUT_SALT = "cmtp-proxy-holdout"


@dataclass(frozen=True)
class Variant:
    """One training set: ``kind`` is all | threshold | random | input."""

    name: str
    kind: str
    available: int  # pairs it could draw from (outside the held-out slice)
    threshold: float | None = None
    keep_rate: float | None = None  # the share of all pairs it keeps
    path: str | None = None  # kind input: its Parquet
    examples: bool = False  # kind input: training examples (query, pos, neg), not pairs
    negatives: bool = False  # trained with the examples' mined negatives (stage 3's loss), not in-batch ones alone

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "available": self.available, "threshold": self.threshold,
                "keep_rate": self.keep_rate, "path": self.path, "examples": self.examples,
                "negatives": self.negatives}


def hash_keys(ids: list[str], salt: str) -> np.ndarray:
    """A uint64 per id from blake2b(salt, id): stable on every machine and Python (unlike ``hash``)."""
    prefix = salt.encode() + b"\x00"
    return np.fromiter((int.from_bytes(hashlib.blake2b(prefix + i.encode(), digest_size=8).digest(), "little")
                        for i in ids), dtype=np.uint64, count=len(ids))


class SmallestKeys:
    """The ``n`` rows with the smallest keys seen so far (ties by pair id), kept as one Arrow table."""

    def __init__(self, n: int):
        self.n, self.keys, self.rows = n, np.zeros(0, np.uint64), None

    def add(self, keys: np.ndarray, rows: pa.Table) -> None:
        if not len(keys):
            return
        keys = np.concatenate([self.keys, keys])
        rows = rows if self.rows is None else pa.concat_tables([self.rows, rows])
        if len(keys) > self.n:
            keep = np.argpartition(keys, self.n - 1)[: self.n]
            keys, rows = keys[keep], rows.take(pa.array(keep))
        self.keys, self.rows = keys, rows

    def table(self) -> pa.Table:
        if self.rows is None:
            return pa.table({c: pa.array([], pa.string()) for c in TEXT_COLUMNS})  # an empty sample
        order = np.lexsort((np.array(self.rows.column("pair_id").to_pylist(), dtype=object), self.keys))
        return self.rows.take(pa.array(order))


def is_examples(dataset: ds.Dataset) -> bool:
    return {"query", "pos"} <= set(dataset.schema.names)


def _example_batches(dataset: ds.Dataset):
    """Training examples as the proxy's rows: id, query as title, the first positive as passage, source, negatives."""
    names = dataset.schema.names
    columns = [c for c in ("example_id", "query", "pos", "neg", "source") if c in names]
    for batch in stream(dataset, columns, 1 << 14):
        rows = batch.to_pylist()
        yield pa.table({"pair_id": [r["example_id"] for r in rows], "title": [r["query"] for r in rows],
                        "passage": [(r["pos"] or [""])[0] for r in rows],
                        "source": [r.get("source") or "" for r in rows],
                        "neg": pa.array([list(r.get("neg") or []) for r in rows], pa.list_(pa.string()))})


def _text_batches(dataset: ds.Dataset, with_score: bool):
    if is_examples(dataset) and not with_score:
        yield from _example_batches(dataset)
        return
    names = dataset.schema.names
    missing = [c for c in ["pair_id", "title", "passage"] if c not in names]
    if missing:
        raise CmtpError(f"proxy training data needs columns pair_id, title, passage; missing {', '.join(missing)}")
    columns = [c for c in TEXT_COLUMNS + (["score"] if with_score else []) if c in names]
    for batch in stream(dataset, columns, 1 << 16):
        table = pa.Table.from_batches([batch])
        if "source" not in names:
            table = table.append_column("source", pa.array([""] * table.num_rows, pa.string()))
        yield table


def holdout_table(dataset: ds.Dataset, size: int) -> pa.Table:
    chosen = SmallestKeys(size)
    for table in _text_batches(dataset, with_score=False):
        chosen.add(hash_keys(table.column("pair_id").to_pylist(), HOLDOUT_SALT), table.select(TEXT_COLUMNS))
    return chosen.table()


def _outside(table: pa.Table, held: set[str]) -> np.ndarray:
    return np.array([i not in held for i in table.column("pair_id").to_pylist()], dtype=bool)


def count_available(dataset: ds.Dataset, thresholds: list[float], held: set[str]) -> tuple[int, list[int]]:
    """Pairs outside the held-out slice: in all, and at or above each threshold (compared in float32, as stored)."""
    total, at = 0, np.zeros(len(thresholds), np.int64)
    cuts = np.array(thresholds, np.float32)
    for table in _text_batches(dataset, with_score=True):
        outside = _outside(table, held)
        scores = table.column("score").to_numpy(zero_copy_only=False).astype(np.float32)[outside]
        total += int(outside.sum())
        at += (scores[:, None] >= cuts[None, :]).sum(axis=0)
    return total, [int(a) for a in at]


def sample_variants(dataset: ds.Dataset, variants: list[Variant], n: int, seed: int, held: set[str]
                    ) -> dict[str, pa.Table]:
    """Each scored variant's sample of ``min(n, available)`` pairs for ``seed``, in one pass over ``dataset``
    (kind input variants are sampled from their own files by :func:`sample_input`)."""
    salt = f"cmtp-proxy-sample-{seed}"
    chosen = {v.name: SmallestKeys(min(n, v.available)) for v in variants if v.kind != "input"}
    for table in _text_batches(dataset, with_score=True):
        outside = _outside(table, held)
        table = table.filter(pa.array(outside))
        keys = hash_keys(table.column("pair_id").to_pylist(), salt)
        scores = table.column("score").to_numpy(zero_copy_only=False).astype(np.float32)
        rows = table.select(TEXT_COLUMNS)
        for v in variants:
            if v.kind == "threshold":
                mask = scores >= np.float32(v.threshold)
                chosen[v.name].add(keys[mask], rows.filter(pa.array(mask)))
            elif v.kind in ("all", "random"):
                chosen[v.name].add(keys, rows)
    return {name: c.table() for name, c in chosen.items()}


def open_input(path: str) -> ds.Dataset:
    """Another input of a comparison (NAME=PATH): a stage folder (its pairs/ or kept/), Parquet files or a glob."""
    import fsspec

    files = parquet_files(path, INPUT_SUBDIRS)
    filesystem = fsspec.get_fs_token_paths(files[0])[0]
    try:
        return ds.dataset([filesystem._strip_protocol(f) for f in files], format="parquet", filesystem=filesystem)
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise CmtpError(f"cannot read {path}: {exc}") from exc


def input_variants(name: str, path: str, held: set[str], twin: bool = True) -> list[Variant]:
    """A NAME=PATH input; training examples train with their mined negatives (stage 3's loss) and, with ``twin``,
    also as a second variant from the same queries with in-batch negatives alone, so a table says what the mining
    added."""
    dataset = open_input(path)
    available = sum(int(_outside(t, held).sum()) for t in _text_batches(dataset, with_score=False))
    if not is_examples(dataset):
        return [Variant(name, "input", available, path=path)]
    mined = Variant(name, "input", available, path=path, examples=True, negatives=True)
    return [mined, Variant(f"{name} (in-batch negatives only)", "input", available, path=path, examples=True)] \
        if twin else [mined]


def sample_input(variant: Variant, n: int, seed: int, held: set[str], held_texts: set[str]) -> pa.Table:
    """A NAME=PATH input's sample, under the same salt as the scored variants; the held-out slice is left out by
    pair id and by passage text (another stage's ids may differ for the same pair). Examples keep their negatives
    when the variant trains with them."""
    columns = EXAMPLE_COLUMNS if variant.negatives else TEXT_COLUMNS
    chosen = SmallestKeys(min(n, variant.available))
    for table in _text_batches(open_input(variant.path), with_score=False):
        passages = table.column("passage").to_pylist()
        keep = _outside(table, held) & np.array([p not in held_texts for p in passages], dtype=bool)
        table = table.filter(pa.array(keep)).select(columns)
        chosen.add(hash_keys(table.column("pair_id").to_pylist(), f"cmtp-proxy-sample-{seed}"), table)
    return chosen.table()


def write_pairs(table: pa.Table, path) -> None:
    """One Parquet file of what the trainer streams, written atomically: training pairs, or (a table with ``neg``)
    training examples whose group is the positive and the mined negatives."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if "neg" in table.column_names:
        n = table.num_rows
        table = pa.table({
            "example_id": table.column("pair_id"), "query": table.column("title"),
            "pos": pa.array([[p] for p in table.column("passage").to_pylist()], pa.list_(pa.string())),
            "neg": table.column("neg"), "instruction": pa.nulls(n, pa.string()), "source": table.column("source"),
            "task": pa.array(["retrieval"] * n), "pos_scores": pa.array([[]] * n, pa.list_(pa.float32())),
            "neg_scores": pa.array([[]] * n, pa.list_(pa.float32())),
            "neg_kinds": pa.array([[]] * n, pa.list_(pa.string()))})
    pq.write_table(table, tmp, row_group_size=4096)
    tmp.replace(path)
