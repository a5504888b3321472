"""One query's mining: its search results -> guarded, seeded negatives -> its training-example row.

``Miner`` holds what every example needs, prepared once per process: the pool, the search index, the
random-pair baseline of the false-negative guard, and (loaded only when a positive or labeled negative is not
in the pool) the embedding model. Its tallies (guards, short rows, padding) add up across partitions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from cmtp.transforms.common.memory import release_freed_memory
from cmtp.transforms.embedding.blocks import TextEmbedder

from .config import MineConfig
from .example_store import Example, ExampleStore
from .index import SearchIndex, build_index, tune_nprobe
from .pool_store import PoolStore, text_key
from .sampling import GUARDS, Chosen, choose_negatives, random_padding


def score_baseline(store: PoolStore, queries: np.ndarray, seed: int, sample: int = 2048) -> float:
    """Median score of random (query, pool passage) pairs: where "unrelated" sits for this scorer and pool
    (around 0 for some models, 0.8 for e5), the zero point of the false-negative guard."""
    rng = np.random.default_rng([seed, 7])
    picks = np.sort(rng.choice(len(store), size=min(sample, len(store)), replace=False))
    q = queries[rng.choice(len(queries), size=min(256, len(queries)), replace=False)]
    return float(np.median(q.astype(np.float32) @ store.vectors(picks).T))


class SameQueryPositives:
    """For queries that several examples ask (several answers to one question): the keys of every positive of
    those examples, as two sorted uint64 arrays (16 bytes a positive; a dict of positive texts grew with the
    corpus, 0.8 KB an example where titles repeat)."""

    def __init__(self, query_keys: np.ndarray, positive_keys: np.ndarray):
        order = np.argsort(query_keys, kind="stable")
        self.query_keys, self.positive_keys = query_keys[order], positive_keys[order]

    def of(self, query: str) -> np.ndarray:
        """Keys of every positive of the examples whose normalised query is ``query``'s (empty if only one asks)."""
        key = np.uint64(text_key(query))
        lo, hi = np.searchsorted(self.query_keys, key, "left"), np.searchsorted(self.query_keys, key, "right")
        return self.positive_keys[lo:hi]


def same_query_positives(examples: ExampleStore) -> SameQueryPositives:
    """The positives of the queries that more than one example asks (the others need no entry: only their own
    positives)."""
    keys = np.fromiter((text_key(q) for block in examples.column("query") for q in block), dtype=np.uint64)
    unique, counts = np.unique(keys, return_counts=True)
    shared = unique[counts > 1]
    query_keys, positive_keys = [], []
    if len(shared):
        for block in examples.blocks():
            block_keys = np.array([text_key(e.query) for e in block], dtype=np.uint64)
            for e, key in zip(block, block_keys, strict=True):
                if key == shared[min(np.searchsorted(shared, key), len(shared) - 1)]:
                    query_keys += [key] * len(e.pos)
                    positive_keys += [text_key(p) for p in e.pos]
    return SameQueryPositives(np.array(query_keys, dtype=np.uint64), np.array(positive_keys, dtype=np.uint64))


@dataclass
class MinerTally:
    """What mining removed or could not find, summed over every partition."""

    guards: Counter = field(default_factory=lambda: Counter({name: 0 for name in GUARDS}))
    short_rows: int = 0
    missing: int = 0
    padded: int = 0
    rows: int = 0

    def add(self, other: MinerTally) -> None:
        self.guards.update(other.guards)
        self.short_rows += other.short_rows
        self.missing += other.missing
        self.padded += other.padded
        self.rows += other.rows

    def to_dict(self) -> dict:
        return {"guards": dict(self.guards), "short_rows": self.short_rows, "missing": self.missing,
                "padded": self.padded, "rows": self.rows}

    @classmethod
    def from_dict(cls, data: dict) -> MinerTally:
        return cls(Counter(data["guards"]), data["short_rows"], data["missing"], data["padded"], data["rows"])


class Miner:
    def __init__(self, config: MineConfig, embedder: Callable[[], TextEmbedder] | None, store: PoolStore,
                 groups: SameQueryPositives):
        """``embedder``: makes the model when first needed (a positive that is not in a separate pool)."""
        self.config, self.store, self.groups = config, store, groups
        self._make_embedder, self._embedder = embedder, None
        self.tally = MinerTally()
        self.baseline: float | None = None
        self.search: SearchIndex | None = None
        self.k = 0

    def passage_vectors(self, texts: list[str]) -> np.ndarray:
        """Embeddings of texts from the pool's shards, encoding only those the pool does not hold."""
        dim = self.store.shard(0).shape[1]
        if not texts:
            return np.zeros((0, dim), np.float32)
        index = self.store.lookup(texts)
        out = np.zeros((len(texts), dim), np.float32)
        found = index >= 0
        if found.any():
            out[found] = self.store.vectors(index[found])
        if (~found).any():
            if self._embedder is None:
                self._embedder = self._make_embedder()
            out[~found] = self._embedder.embed([t for t, f in zip(texts, found, strict=True) if not f], "passage")
        return out

    def prepare_search(self, first_queries: np.ndarray, k: int) -> None:
        """Build the index, tune ``nprobe`` on the first queries (or fall back to exact search where IVF needs
        most of its lists) and measure the random-pair baseline."""
        config, store = self.config, self.store
        search = build_index(store, config)
        tune_nprobe(search, store, first_queries[:512], k, config.target_recall, config.nprobe)
        if search.nlist and not config.nprobe and search.nprobe > search.nlist // 4:
            # IVF needs most of its lists for the target recall on this data: exact search costs no more
            # (with IVF-PQ, memory is what was asked to be saved: exact search one disk shard at a time)
            tried = search.tried()
            # the IVF index holds every vector too: freed (and its heap pages returned) before the exact index is
            # built, not beside it (both at once were mine's peak: 913 MiB at 1M documents against 774 when searching)
            del search
            release_freed_memory()
            search = SearchIndex(None, "exact_sharded", store=store) if config.ivf_pq else \
                build_index(store, replace(config, flat_max=len(store)))
            search.fallback_from = tried
        self.search, self.k = search, k
        self.baseline = score_baseline(store, first_queries, config.seed)

    def mine(self, examples: list[Example], queries: np.ndarray):
        """Rows of ``examples`` whose query vectors are ``queries``, in order."""
        scores, ids = self.search.search(queries, self.k)
        for row, example in enumerate(examples):
            yield self.example_row(example, queries[row], ids[row], scores[row])

    def example_row(self, example: Example, q: np.ndarray, ranked_ids: np.ndarray, ranked_scores: np.ndarray) -> dict:
        config, store, tally = self.config, self.store, self.tally
        pos_scores = [float(s) for s in self.passage_vectors(example.pos) @ q]
        labeled = example.neg if config.keep_labeled_negatives else []
        wanted = max(0, config.negatives - len(labeled))
        others = self.groups.of(example.query)  # keys; the example's own positives among them are is_positive first
        chosen = choose_negatives(example.example_id, example.query, example.pos, pos_scores, example.cluster_id,
                                  ranked_ids, ranked_scores, store, config, wanted, tally.guards, self.baseline,
                                  example.neg, others)
        if len(chosen) < wanted and config.pad_random:
            blocked = {text_key(t) for t in example.neg} | set(others.tolist())
            fill = random_padding(example.example_id, example.query, example.pos,
                                  {c.index for c in chosen}, store, config, wanted - len(chosen), blocked)
            for idx, v in zip(fill, store.vectors(fill) if fill else [], strict=True):
                chosen.append(Chosen(idx, float(np.dot(q, v)), "random"))
            tally.padded += len(fill)
        if len(chosen) < wanted:
            tally.short_rows += 1
            tally.missing += wanted - len(chosen)
        tally.rows += 1
        labeled_scores = [float(s) for s in self.passage_vectors(labeled) @ q]
        return {
            "example_id": example.example_id, "query": example.query, "pos": example.pos,
            "neg": labeled + [store.text(c.index) for c in chosen],
            "instruction": example.instruction or config.train_instruction, "source": example.source,
            "task": example.task, "pos_scores": pos_scores,
            "neg_scores": labeled_scores + [c.score for c in chosen],
            "neg_kinds": ["labeled"] * len(labeled) + [c.kind for c in chosen],
        }
