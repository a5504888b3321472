"""Nearest-neighbour search over the pool with faiss: exact flat search, or IVF with a tuned ``nprobe``.

Up to ``flat_max`` passages an exact ``IndexFlatIP``; above it IVF-Flat (or IVF-PQ) with ``nlist`` ~ 4 sqrt(N),
trained on a seeded sample, and ``nprobe`` raised until a sample of queries reaches the target recall@k of
exact search. With a GPU build of faiss the index is cloned to all GPUs in float16, sharded. Exact search
can also run shard by shard over the on-disk embeddings, merging per-shard top-k exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import faiss
import numpy as np

from .config import MineConfig
from .embed import PoolStore


def merge_topk(scores: list[np.ndarray], ids: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact global top-k (by score, descending; ties by lower id) from per-shard top-k lists."""
    s = np.concatenate(scores, axis=1)
    i = np.concatenate(ids, axis=1)
    s = np.where(i < 0, -np.inf, s)
    order = np.lexsort((i, -s), axis=1)[:, :k]
    return np.take_along_axis(s, order, axis=1), np.take_along_axis(i, order, axis=1)


def exact_sharded_search(store: PoolStore, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k, one on-disk shard in memory at a time."""
    scores, ids = [], []
    for shard, offset in zip(range(len(store.shards)), store.shard_offsets(), strict=True):
        vectors = np.ascontiguousarray(store.shard(shard), dtype=np.float32)
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        d, i = index.search(queries, min(k, len(vectors)))
        scores.append(d)
        ids.append(np.where(i >= 0, i + offset, -1))
    return merge_topk(scores, ids, k)


def gpus_available() -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


@dataclass
class SearchIndex:
    index: faiss.Index
    kind: str
    nlist: int | None = None
    nprobe: int | None = None
    measured_recall: float | None = None
    on_gpu: bool = False

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)

    def describe(self) -> dict:
        return {"kind": self.kind, "ntotal": int(self.index.ntotal), "nlist": self.nlist, "nprobe": self.nprobe,
                "measured_recall_at_k": self.measured_recall, "gpu": self.on_gpu}


def _to_gpu(index: faiss.Index) -> faiss.Index:
    options = faiss.GpuMultipleClonerOptions()
    options.useFloat16 = True
    options.shard = True
    return faiss.index_cpu_to_all_gpus(index, co=options)


def _sample_vectors(store: PoolStore, count: int, seed: int) -> np.ndarray:
    picks = np.sort(np.random.default_rng(seed).choice(len(store), size=min(count, len(store)), replace=False))
    return store.vectors(picks)


def build_index(store: PoolStore, config: MineConfig) -> SearchIndex:
    n = len(store)
    dim = store.shard(0).shape[1]
    use_gpu = gpus_available() > 0 if config.use_gpu is None else config.use_gpu
    if n <= config.flat_max:
        index = faiss.IndexFlatIP(dim)
        for shard in range(len(store.shards)):
            index.add(np.ascontiguousarray(store.shard(shard), dtype=np.float32))
        return SearchIndex(_to_gpu(index) if use_gpu else index, "flat", on_gpu=use_gpu)
    nlist = int(min(65536, max(16, round(4 * math.sqrt(n)))))
    quantizer = faiss.IndexFlatIP(dim)
    if config.ivf_pq:
        m = max(1, dim // 8)
        while dim % m:
            m -= 1
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
        kind = f"ivf{nlist}_pq{m}"
    else:
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        kind = f"ivf{nlist}_flat"
    index.train(_sample_vectors(store, min(n, 64 * nlist), config.seed))
    for shard in range(len(store.shards)):
        index.add(np.ascontiguousarray(store.shard(shard), dtype=np.float32))
    result = SearchIndex(index, kind, nlist=nlist)
    if use_gpu:
        result.index, result.on_gpu = _to_gpu(index), True
    return result


def tune_nprobe(search: SearchIndex, store: PoolStore, queries: np.ndarray, k: int, target: float,
                fixed: int | None = None) -> None:
    """Set ``nprobe`` (the given one, or the smallest power of two reaching ``target`` recall@k on ``queries``)
    and record the recall it measured against exact sharded search."""
    if search.nlist is None:
        return
    _, truth = exact_sharded_search(store, queries, k)
    candidates = [fixed] if fixed else [2**i for i in range(int(math.log2(search.nlist)) + 1)] + [search.nlist]
    for nprobe in candidates:
        faiss.ParameterSpace().set_index_parameter(search.index, "nprobe", nprobe)
        _, found = search.search(queries, k)
        recall = float(np.mean([len(np.intersect1d(a[a >= 0], b[b >= 0])) / max((b >= 0).sum(), 1)
                                for a, b in zip(found, truth, strict=True)]))
        search.nprobe, search.measured_recall = nprobe, recall
        if recall >= target:
            return
