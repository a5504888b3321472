"""LSH banding: bands and rows from the Jaccard threshold (datasketch's optimum), and band hashes."""

from __future__ import annotations

import numpy as np

_K1, _K2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9)


def optimal_bands_rows(threshold: float, num_perm: int, fp_weight: float = 0.5,
                       fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising the weighted false positive and negative probability, as datasketch does."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(fp_weight, fn_weight))
    return lsh.b, lsh.r


def _fmix64(h: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finaliser (wrapping uint64 arithmetic)."""
    with np.errstate(over="ignore"):
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xC4CEB9FE1A85EC53)
        h ^= h >> np.uint64(33)
    return h


def band_hashes(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """uint64 ``[n, bands]``: one hash per band of each signature, mixing the band's index and its ``rows`` values
    (equal hashes = candidate duplicates; two different bands collide with probability 2^-64). Vectorised over
    every signature and band at once; written here because no library hashes a matrix's row slices in one pass."""
    n = len(signatures)
    values = signatures[:, : bands * rows].reshape(n, bands, rows).astype(np.uint64)
    with np.errstate(over="ignore"):
        h = np.broadcast_to((np.arange(bands, dtype=np.uint64) + np.uint64(1)) * _K1, (n, bands)).copy()
        for j in range(rows):
            h ^= values[:, :, j]
            h *= _K2
            h ^= h >> np.uint64(31)
    return _fmix64(h)


def collision_probability(jaccard: float, bands: int, rows: int) -> float:
    """Probability that two sets with this Jaccard share at least one band."""
    return 1.0 - (1.0 - jaccard**rows) ** bands
