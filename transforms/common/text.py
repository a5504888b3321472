"""Text keys shared by extract (exact duplicates, blocklists, repetition) and dedup (MinHash shingles): the
compare form of a text, and a vectorised 64-bit hash of its character n-grams.

The n-gram hash is written here rather than taken from a library: it hashes every n-gram of a text in one numpy
pass over its code points (datasketch and xxhash hash one string at a time, which is the cost that dominates
shingling), and its values are part of the outputs (the MinHash signatures), so it must not change with a
dependency's version.
"""

from __future__ import annotations

import re

import numpy as np

_NOT_WORD = re.compile(r"[\W_]+", re.U)
_FNV_PRIME = np.uint64(1099511628211)
_FNV_OFFSET = np.uint64(14695981039346656037)


def without_punctuation(text: str) -> str:
    """``text`` without spaces, punctuation or underscores."""
    return _NOT_WORD.sub("", text)


def compare_form(text: str) -> str:
    """Lower-cased, without spaces and punctuation: the form duplicate checks and blocklists compare."""
    return without_punctuation(text.lower())


def char_ngram_hashes(t: str, n: int) -> np.ndarray:
    """64-bit hash of every character n-gram of ``t`` (FNV-1a over code points), vectorised; len(t) >= n."""
    cps = np.frombuffer(t.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    m = len(cps) - n + 1
    h = np.full(m, _FNV_OFFSET, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            h ^= cps[k : k + m]
            h *= _FNV_PRIME
        h ^= np.uint64(n)  # a short text's single shingle differs from an n-gram with the same prefix
    return h
