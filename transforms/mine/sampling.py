"""Choosing hard negatives for one query: false-negative guards, then seeded sampling from a rank range.

Guards, applied in this order to the candidates at ranks [range_start, range_end), each counted (zeros too):
``is_positive`` (same normalised text as a positive: the positive itself or an exact duplicate),
``positive_of_same_query`` (a positive of another example whose normalised query is the same: another answer
to the same question), ``equals_query``, ``labeled_negative`` (already among the example's own negatives),
``same_cluster_as_positive`` (the dedup stage's MinHash cluster), ``too_close_to_positive`` (likely false
negatives, see :func:`false_negative_ceiling`), ``near_duplicate_of_positive`` (character 5-gram Jaccard >=
``near_dup_jaccard`` with a positive).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from cmtp.transforms.common.ids import stable_id
from cmtp.transforms.dedup.shingles import jaccard, shingle_hashes

from .config import MineConfig
from .pool_store import PoolStore, text_key

GUARDS = ("is_positive", "positive_of_same_query", "equals_query", "labeled_negative", "same_cluster_as_positive",
          "too_close_to_positive", "near_duplicate_of_positive")


def false_negative_ceiling(pos_score: float, baseline: float, ratio: float) -> float:
    """The highest score a negative may have: ``ratio`` of the positive's score, both measured above the pool's
    ``baseline`` (the median score of random query-passage pairs).

    Positive-aware mining (NV-Retriever's "TopK-PercPos") keeps negatives below a share of the positive's score.
    On raw cosines that only works for a scorer whose unrelated pairs sit near 0: e5 puts random pairs near
    0.8 and positives near 0.92, so 0.95 x 0.92 = 0.87 removed most genuine hard negatives (51,998 candidates,
    114 of 2,000 rows left short in a real run). Rescaled as ``(s - baseline) / (1 - baseline)`` the rule means
    the same for every scorer: ``s' <= ratio * pos'``."""
    return baseline + ratio * (pos_score - baseline)


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
    baseline: float = 0.0,
    labeled_negatives: list[str] = (),
    same_query_positives: np.ndarray | None = None,
) -> list[Chosen]:
    """The cheap guards run on every candidate of the window at once; the survivors are visited in a seeded
    random order and the near-duplicate check (which needs the text) runs only until ``wanted`` are accepted,
    so its count covers the candidates examined. The chosen ones are returned in rank order."""
    window = slice(config.range_start, config.range_end)
    ids, scores = ranked_ids[window], ranked_scores[window]
    valid = ids >= 0
    ids, scores = ids[valid], scores[valid]
    keys = store.keys[ids]
    pos_keys = np.array([text_key(p) for p in positives], dtype=np.uint64)
    other_answers = np.zeros(0, np.uint64) if same_query_positives is None else same_query_positives  # keys
    labeled_keys = np.array([text_key(n) for n in labeled_negatives], dtype=np.uint64)
    ceiling = false_negative_ceiling(min(pos_scores), baseline, config.max_neg_ratio) if pos_scores else np.inf
    checks = [
        ("is_positive", np.isin(keys, pos_keys)),
        ("positive_of_same_query", np.isin(keys, other_answers)),
        ("equals_query", keys == np.uint64(text_key(query))),
        ("labeled_negative", np.isin(keys, labeled_keys)),
        ("same_cluster_as_positive", np.array([cluster_id is not None and c == cluster_id
                                               for c in store.clusters(ids)] if cluster_id is not None
                                              else np.zeros(len(ids)), dtype=bool)),
        ("too_close_to_positive", scores > ceiling),
    ]
    alive = np.ones(len(ids), dtype=bool)
    for name, hit in checks:
        guards[name] += int((alive & hit).sum())
        alive &= ~hit
    order = np.flatnonzero(alive)
    if len(order) > wanted:
        order = order[rng_for(example_id, config.seed).permutation(len(order))]
    pos_shingles = [shingle_hashes(p) for p in positives]
    accepted: list[int] = []
    for position in order:
        if len(accepted) == wanted:
            break
        text = store.text(ids[position])
        if any(jaccard(shingle_hashes(text), p) >= config.near_dup_jaccard for p in pos_shingles):
            guards["near_duplicate_of_positive"] += 1
            continue
        accepted.append(int(position))
    return [Chosen(int(ids[p]), float(scores[p]), "mined") for p in sorted(accepted)]


def random_padding(example_id: str, query: str, positives: list[str], taken: set[int], store: PoolStore,
                   config: MineConfig, count: int, blocked: set[int] = frozenset()) -> list[int]:
    """Up to ``count`` random pool rows that are not positives, the query, or already taken (``blocked``: keys
    of more texts to avoid, such as the example's labeled negatives)."""
    rng = rng_for(example_id + "/random", config.seed)
    blocked = {text_key(p) for p in positives} | {text_key(query)} | set(blocked)
    out: list[int] = []
    for idx in rng.permutation(len(store))[: count * 20 + 20]:
        if len(out) == count:
            break
        if int(idx) in taken or int(store.keys[idx]) in blocked:
            continue
        out.append(int(idx))
    return out
