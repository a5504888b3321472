"""Vectorised MinHash signatures, in datasketch's ``affine32`` scheme.

datasketch hashes every shingle with a Python call (sha1 by default) and updates one MinHash at a time.
Here the shingle hashes come as a NumPy array (see ``shingles.shingle_hashes``), are mixed to 32 bits with
the murmur3 finaliser, permuted with ``a * h + b mod 2^32`` for all ``num_perm`` permutations at once, and
reduced with ``np.minimum.reduceat`` over many documents per call. The permutation parameters are drawn
exactly as datasketch draws them (``RandomState(seed)``, odd ``a``), so estimates follow the same law; a
test checks them against datasketch within sampling error.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

_MASK32 = np.uint64(0xFFFFFFFF)
EMPTY = np.uint32(0xFFFFFFFF)  # signature value of an empty set


@lru_cache(maxsize=8)
def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint64).astype(np.uint32)
    return a, b


def _fmix32(h: np.ndarray) -> np.ndarray:
    """murmur3's 32-bit finaliser on the 64-bit hash with its halves folded together (uint64 in, uint32 out)."""
    h = ((h ^ (h >> np.uint64(32))) & _MASK32).astype(np.uint32)
    with np.errstate(over="ignore"):
        h ^= h >> np.uint32(16)
        h *= np.uint32(0x85EBCA6B)
        h ^= h >> np.uint32(13)
        h *= np.uint32(0xC2B2AE35)
        h ^= h >> np.uint32(16)
    return h


def minhash_segments(values: np.ndarray, lengths: np.ndarray, num_perm: int = 128, seed: int = 1,
                     chunk: int = 4096) -> np.ndarray:
    """Signatures of consecutive segments of ``values`` (64-bit shingle hashes; duplicates are harmless).

    Returns uint32 ``[len(lengths), num_perm]``; an empty segment gets the all-``EMPTY`` signature.
    """
    a, b = permutations(num_perm, seed)
    lengths = np.asarray(lengths, dtype=np.int64)
    out = np.full((len(lengths), num_perm), EMPTY, dtype=np.uint32)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    doc = 0
    while doc < len(lengths):
        # a group of documents whose shingles fit one [num_perm, chunk] matrix (at least one document)
        last = max(doc + 1, int(np.searchsorted(ends, starts[doc] + chunk, side="right")))
        group = np.arange(doc, last)
        group = group[lengths[group] > 0]
        if len(group):
            lo, hi = starts[group[0]], ends[group[-1]]
            mixed = _fmix32(values[lo:hi])
            # uint32 arithmetic wraps: this is a * h + b mod 2^32, with the matrix small enough for cache
            permuted = mixed[None, :] * a[:, None]
            permuted += b[:, None]
            out[group] = np.minimum.reduceat(permuted, starts[group] - lo, axis=1).T
        doc = last
    return out


def signatures(hash_sets: list[np.ndarray], num_perm: int = 128, seed: int = 1) -> np.ndarray:
    """MinHash signatures (uint32, ``[len(hash_sets), num_perm]``) of several shingle-hash arrays."""
    lengths = np.array([len(h) for h in hash_sets], dtype=np.int64)
    values = np.concatenate(hash_sets).astype(np.uint64) if len(hash_sets) else np.zeros(0, np.uint64)
    return minhash_segments(values, lengths, num_perm, seed)


def text_signatures(texts: list[str], n: int = 5, num_perm: int = 128, seed: int = 1) -> np.ndarray:
    """Signatures of the character n-gram sets of many texts, hashed in one vectorised pass.

    Equal to ``signatures([shingle_hashes(t, n) for t in texts])``: the normalised texts are joined, the
    n-gram hashes computed over the whole array at once, and the n-grams that cross a text boundary skipped.
    """
    from cmtp.transforms.common.text import char_ngram_hashes

    from .shingles import normalize, shingle_hashes

    norms = [normalize(t) for t in texts]
    lens = np.array([len(t) for t in norms], dtype=np.int64)
    counts = np.maximum(lens - n + 1, 0)
    joined = "".join(norms)
    if counts.sum():
        all_hashes = char_ngram_hashes(joined, n)
        text_starts = np.cumsum(lens) - lens
        count_starts = np.cumsum(counts) - counts
        index = np.arange(counts.sum()) + np.repeat(text_starts - count_starts, counts)
        sigs = minhash_segments(all_hashes[index], counts, num_perm, seed)
    else:
        sigs = np.full((len(texts), num_perm), EMPTY, dtype=np.uint32)
    short = np.flatnonzero((lens > 0) & (lens < n))
    if len(short):  # texts shorter than n: their whole text is their one shingle
        sigs[short] = signatures([shingle_hashes(norms[i], n) for i in short], num_perm, seed)
    return sigs


def estimate_jaccard(s1: np.ndarray, s2: np.ndarray) -> float:
    return float(np.count_nonzero(s1 == s2)) / len(s1)
