"""Shingling Chinese text for near-duplicate detection.

Character n-grams (default 5) over the normalised text with punctuation and whitespace removed: a Chinese
sentence has no spaces, so splitting on non-word characters (or on spaces) would make one "token" of it.
Words from jieba are the alternative (``mode="word"``). A text shorter than n yields itself as its only
shingle, so short texts still compare equal to their exact copies.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import numpy as np

_NOT_WORD = re.compile(r"[\W_]+", re.U)
_HASH_BASE = np.uint64(1099511628211)
_HASH_OFFSET = np.uint64(14695981039346656037)


def _nfkc(text: str) -> str:
    # Extract's output is NFKC already, and the check is ~50x cheaper than normalising; otherwise the Rust
    # normaliser of `tokenizers` is ~2.5x faster than unicodedata's.
    if unicodedata.is_normalized("NFKC", text):
        return text
    return _rust_nfkc().normalize_str(text)


@lru_cache(maxsize=1)
def _rust_nfkc():
    from tokenizers.normalizers import NFKC

    return NFKC()


def normalize(text: str) -> str:
    """NFKC, lower case, without punctuation or whitespace."""
    return _NOT_WORD.sub("", _nfkc(text).lower())


def char_shingles(text: str, n: int = 5) -> list[str]:
    """The character n-grams of ``normalize(text)`` (the text itself when shorter than n; [] when empty)."""
    t = normalize(text)
    if len(t) <= n:
        return [t] if t else []
    return [t[i : i + n] for i in range(len(t) - n + 1)]


def word_shingles(text: str, n: int = 2) -> list[str]:
    """jieba word n-grams, joined with a space (punctuation and whitespace tokens dropped)."""
    import jieba

    words = [w for w in (normalize(tok) for tok in jieba.lcut(text)) if w]
    if len(words) <= n:
        return [" ".join(words)] if words else []
    return [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]


def shingle_hashes(text: str, n: int = 5, mode: str = "char") -> np.ndarray:
    """Sorted unique 64-bit hashes of the text's shingles (the set MinHash and exact Jaccard work on).

    Character shingles are hashed vectorised: a polynomial hash over the code points of each n-gram.
    """
    if mode == "word":
        return np.unique(np.array([_hash_str(s) for s in word_shingles(text, n)], dtype=np.uint64))
    if mode != "char":
        raise ValueError(f"unknown shingle mode {mode!r} (char or word)")
    t = normalize(text)
    if not t:
        return np.zeros(0, dtype=np.uint64)
    return np.unique(char_ngram_hashes(t, min(n, len(t))))


def char_ngram_hashes(t: str, n: int) -> np.ndarray:
    """64-bit hash of every character n-gram of ``t`` (FNV-1a over code points), vectorised; len(t) >= n."""
    cps = np.frombuffer(t.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    m = len(cps) - n + 1
    h = np.full(m, _HASH_OFFSET, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            h ^= cps[k : k + m]
            h *= _HASH_BASE
        h ^= np.uint64(n)  # a short text's single shingle differs from an n-gram with the same prefix
    return h


def _hash_str(s: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "little")


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard of two sorted unique hash arrays."""
    if not len(a) and not len(b):
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)
