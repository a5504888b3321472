"""Exact dedup of extract's pairs on keys alone: one pair per normalised passage, or per normalised (title, passage).

The cleaning step writes each batch of pairs to a scratch file and emits only their keys (:func:`dedup_keys`): a
hash of the compared passage (or of title and passage), a hash of the compared title, the pair id and its place
(batch, row). Keys are grouped by a partition of the passage hash; within a group the lowest ``pair_id`` is kept (so
the choice does not depend on bundle order), and every other member is a ``duplicate_pair`` when a lower id shares
its title too, else a ``duplicate_passage`` (:func:`exact_duplicates`). The decisions go back to the batches, whose
rows never moved.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cmtp.transforms.common.ids import stable_id

from .filters import normalize_for_match

KEY_SCHEMA = pa.schema([("group", pa.string()), ("title", pa.string()), ("pair_id", pa.string()),
                        ("batch", pa.string()), ("row", pa.int32())])
DECISION_SCHEMA = pa.schema([("row", pa.int32()), ("reason", pa.string()), ("kept_id", pa.string())])


def match_keys(title: str, passage: str) -> tuple[str, str, str]:
    """(passage key, (title, passage) key, title key) of a pair: hashes of their compare forms."""
    title, passage = normalize_for_match(title), normalize_for_match(passage)
    return stable_id(passage, length=32), stable_id(title, passage, length=32), stable_id(title, length=32)


def dedup_keys(pairs: pa.Table, batch: str, by_passage: bool) -> pa.Table:
    """The keys of a batch of pairs (``KEY_SCHEMA``)."""
    keys = [match_keys(t, p) for t, p in zip(pairs.column("title").to_pylist(), pairs.column("passage").to_pylist(),
                                             strict=True)]
    return pa.table({"group": [k[0] if by_passage else k[1] for k in keys], "title": [k[2] for k in keys],
                     "pair_id": pairs.column("pair_id"), "batch": [batch] * pairs.num_rows,
                     "row": pa.array(np.arange(pairs.num_rows, dtype=np.int32))}, schema=KEY_SCHEMA)


def group_partition(keys: pa.Table, parts: int) -> np.ndarray:
    """The partition of each key row, from its group hash (hex): every copy of a passage meets in one partition."""
    return np.array([int(g[:8], 16) % parts for g in keys.column("group").to_pylist()], dtype=np.int64)


def exact_duplicates(keys: pa.Table, by_passage: bool) -> dict[str, pa.Table]:
    """Key rows of one or more groups -> the dropped members' decisions (``DECISION_SCHEMA``) by batch."""
    keys = keys.take(pc.sort_indices(keys, [("group", "ascending"), ("pair_id", "ascending"), ("batch", "ascending"),
                                            ("row", "ascending")]))
    group = keys.column("group").to_pylist()
    starts = [i for i in range(len(group)) if i == 0 or group[i] != group[i - 1]] + [len(group)]
    title, pair_id = keys.column("title").to_pylist(), keys.column("pair_id").to_pylist()
    batch, row = keys.column("batch").to_pylist(), keys.column("row").to_pylist()
    out: dict[str, list[tuple[int, str, str]]] = {}
    for lo, hi in zip(starts, starts[1:], strict=False):
        if hi - lo < 2:
            continue
        first_with_title: dict[str, str] = {}
        for i in range(lo, hi):
            first = first_with_title.setdefault(title[i], pair_id[i])
            if i == lo:
                continue
            if first != pair_id[i]:
                reason, kept = "duplicate_pair", first
            elif by_passage:
                reason, kept = "duplicate_passage", pair_id[lo]
            else:  # a (title, passage) group has one title: every later member is a duplicate_pair above
                continue
            out.setdefault(batch[i], []).append((row[i], reason, kept))
    return {b: pa.table({"row": pa.array([d[0] for d in ds], pa.int32()), "reason": [d[1] for d in ds],
                         "kept_id": [d[2] for d in ds]}, schema=DECISION_SCHEMA) for b, ds in out.items()}

