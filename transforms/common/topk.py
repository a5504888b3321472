"""Merging per-shard top-k search results into the exact global top-k (used by mining's sharded search and by
retrieval evaluation's chunked corpus)."""

from __future__ import annotations

import numpy as np


def merge_topk(scores: list[np.ndarray], ids: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact global top-k (by score, descending; ties by lower id) from per-shard top-k lists; id -1 = none."""
    s = np.concatenate(scores, axis=1)
    i = np.concatenate(ids, axis=1)
    s = np.where(i < 0, -np.inf, s)
    order = np.lexsort((i, -s), axis=1)[:, :k]
    return np.take_along_axis(s, order, axis=1), np.take_along_axis(i, order, axis=1)
