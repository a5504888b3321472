"""Choosing hard negatives for one query: false-negative guards, then seeded sampling from a rank range.

Guards, applied in this order to the candidates at ranks [range_start, range_end), each counted:
``is_positive`` (same normalised text as a positive: the positive itself or an exact duplicate),
``equals_query``, ``same_cluster_as_positive`` (the dedup stage's MinHash cluster), ``too_close_to_positive``
(score above ``max_neg_ratio`` x the lowest positive score), ``near_duplicate_of_positive`` (character 5-gram
Jaccard >= ``near_dup_jaccard`` with a positive).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from transforms.common.ids import stable_id
from transforms.dedup.shingles import jaccard, shingle_hashes

from .config import MineConfig
from .embed import PoolStore, text_key


@dataclass
class Chosen:
    index: int
    score: float
    kind: str  # mined | random


def rng_for(example_id: str, seed: int) -> np.random.Generator:
    """A generator that depends only on the seed and the example, not on processing order."""
    return np.random.default_rng([seed, int(stable_id(example_id), 16) & 0xFFFFFFFF])


def choose_negatives(
    example_id: str,
    query: str,
    positives: list[str],
    pos_scores: list[float],
    cluster_id: str | None,
    ranked_ids: np.ndarray,
    ranked_scores: np.ndarray,
    store: PoolStore,
    config: MineConfig,
    wanted: int,
    guards: Counter,
) -> list[Chosen]:
    pos_keys = {text_key(p) for p in positives}
    query_key = text_key(query)
    pos_shingles = [shingle_hashes(p) for p in positives]
    ceiling = config.max_neg_ratio * min(pos_scores) if pos_scores else np.inf
    survivors: list[Chosen] = []
    window = slice(config.range_start, config.range_end)
    for idx, score in zip(ranked_ids[window], ranked_scores[window], strict=True):
        if idx < 0:
            continue
        key = int(store.keys[idx])
        if key in pos_keys:
            guards["is_positive"] += 1
        elif key == query_key:
            guards["equals_query"] += 1
        elif cluster_id is not None and store.clusters[idx] == cluster_id:
            guards["same_cluster_as_positive"] += 1
        elif score > ceiling:
            guards["too_close_to_positive"] += 1
        elif any(jaccard(shingle_hashes(store.text(idx)), p) >= config.near_dup_jaccard for p in pos_shingles):
            guards["near_duplicate_of_positive"] += 1
        else:
            survivors.append(Chosen(int(idx), float(score), "mined"))
    if len(survivors) <= wanted:
        return survivors
    rng = rng_for(example_id, config.seed)
    picked = np.sort(rng.choice(len(survivors), size=wanted, replace=False))
    return [survivors[i] for i in picked]


def random_padding(example_id: str, query: str, positives: list[str], taken: set[int], store: PoolStore,
                   config: MineConfig, count: int) -> list[int]:
    """Up to ``count`` random pool rows that are not positives, the query, or already taken."""
    rng = rng_for(example_id + "/random", config.seed)
    blocked = {text_key(p) for p in positives} | {text_key(query)}
    out: list[int] = []
    for idx in rng.permutation(len(store))[: count * 20 + 20]:
        if len(out) == count:
            break
        if int(idx) in taken or int(store.keys[idx]) in blocked:
            continue
        out.append(int(idx))
    return out
