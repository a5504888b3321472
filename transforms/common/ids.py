"""Deterministic ids and shard assignment, so that a re-run on the same input gives the same rows and files."""

from __future__ import annotations

import hashlib


def stable_id(*parts: str, length: int = 16) -> str:
    """Hex id from the parts (blake2b); the same parts give the same id on every run and machine."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return h.hexdigest()[:length]


def shard_of(key: str, num_shards: int) -> int:
    """Shard index of ``key`` (stable across processes, unlike ``hash``)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % max(1, num_shards)


def partitions_of(ids, parts: int):
    """The partition (0 .. parts-1) of every integer id, from a multiplicative hash (Fibonacci hashing): ids that
    are close (rows of one batch) spread over all partitions. Vectorised; the same on every machine."""
    import numpy as np

    with np.errstate(over="ignore"):
        mixed = np.asarray(ids).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return ((mixed >> np.uint64(32)) % np.uint64(max(1, parts))).astype(np.int64)
