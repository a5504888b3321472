"""LSH banding: bands and rows from the Jaccard threshold (datasketch's optimum), and band keys."""

from __future__ import annotations

import hashlib

import numpy as np


def optimal_bands_rows(threshold: float, num_perm: int, fp_weight: float = 0.5,
                       fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising the weighted false positive and negative probability, as datasketch does."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(fp_weight, fn_weight))
    return lsh.b, lsh.r


def band_keys(signature: np.ndarray, bands: int, rows: int) -> list[bytes]:
    """One key per band: the band index and a digest of its rows (equal keys = candidate duplicates)."""
    keys = []
    for band in range(bands):
        chunk = signature[band * rows : (band + 1) * rows].tobytes()
        keys.append(band.to_bytes(2, "little") + hashlib.blake2b(chunk, digest_size=12).digest())
    return keys


def collision_probability(jaccard: float, bands: int, rows: int) -> float:
    """Probability that two sets with this Jaccard share at least one band."""
    return 1.0 - (1.0 - jaccard**rows) ** bands
