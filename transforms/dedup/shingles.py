"""Shingling Chinese text for near-duplicate detection.

Character n-grams (default 5) over the normalised text with punctuation and whitespace removed: a Chinese
sentence has no spaces, so splitting on non-word characters (or on spaces) would make one "token" of it.
Words from jieba are the alternative (``mode="word"``). A text shorter than n yields itself as its only
shingle, so short texts still compare equal to their exact copies.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

import numpy as np

from cmtp.transforms.common.text import char_ngram_hashes, compare_form


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
    return compare_form(_nfkc(text))


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


def _hash_str(s: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "little")


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard of two sorted unique hash arrays."""
    if not len(a) and not len(b):
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)
