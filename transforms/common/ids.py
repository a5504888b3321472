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
