"""Nearest-neighbour search over the pool with faiss: exact flat search, or IVF with a tuned ``nprobe``.

Up to ``flat_max`` passages an exact ``IndexFlatIP``; above it IVF-Flat (or IVF-PQ) with ``nlist`` ~ 4 sqrt(N),
trained on a seeded sample, and ``nprobe`` raised until a sample of queries reaches the target recall@k of
exact search. With a GPU build of faiss the index is cloned to all GPUs in float16, sharded. Exact search
can also run shard by shard over the on-disk embeddings, merging per-shard top-k exactly.

IVF-PQ keeps only ``dim / 4`` bytes per passage in memory (``pq_bytes``); its distances are approximate, so it
fetches ``rerank`` x k candidates and orders them by exact inner products read from the on-disk float16 shards
(faiss's ``IndexRefine`` does the same but needs every full vector in RAM, which is what PQ is there to avoid).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from cmtp.schemas.errors import CmtpError
from cmtp.transforms.common.topk import merge_topk

from .config import MineConfig
from .pool_store import PoolStore

PQ_MIN_POOL = 10_000
TRAIN_MAX_VECTORS = 200_000


def exact_sharded_search(store: PoolStore, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k, one on-disk shard in memory at a time, each shard's top-k merged into the best
    so far (the same result as merging every shard's at the end, which held queries x shards x k candidates: at 1M
    documents 177 shards, 220 MiB for the 512 queries that tune ``nprobe``, about 1.7 GiB for a 4,096-query block)."""
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_ids = np.full((len(queries), 0), -1, dtype=np.int64)
    for shard, offset in zip(range(len(store.shards)), store.shard_offsets(), strict=True):
        vectors = np.ascontiguousarray(store.shard(shard), dtype=np.float32)
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        d, i = index.search(queries, min(k, len(vectors)))
        best_scores, best_ids = merge_topk([best_scores, d], [best_ids, np.where(i >= 0, i + offset, -1)], k)
    return best_scores, best_ids


def gpus_available() -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def search_on_gpu(use_gpu: bool | None) -> bool:
    """``--use-gpu``, resolved (default: when faiss sees a GPU) and checked before any work."""
    if use_gpu and not gpus_available():
        raise CmtpError("--use-gpu: faiss sees no GPU here (a faiss-cpu build, or no CUDA device); leave it unset "
                        "to search on the CPU")
    return gpus_available() > 0 if use_gpu is None else use_gpu


def rerank_exact(store: PoolStore, queries: np.ndarray, candidates: np.ndarray, k: int,
                 block: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each row's ``candidates`` (pool ids, -1 = none) by exact inner product with the stored vectors,
    ``block`` queries at a time so the gathered vectors stay small."""
    n, width = candidates.shape
    k = min(k, width)
    scores_out = np.full((n, k), -np.inf, dtype=np.float32)
    ids_out = np.full((n, k), -1, dtype=np.int64)
    for s in range(0, n, block):
        cand = candidates[s : s + block]
        valid = cand >= 0
        unique, inverse = np.unique(np.where(valid, cand, 0), return_inverse=True)
        vectors = store.vectors(unique)[inverse.reshape(cand.shape)]  # [b, width, dim]
        exact = np.einsum("bwd,bd->bw", vectors, queries[s : s + block].astype(np.float32))
        exact = np.where(valid, exact, -np.inf)
        order = np.lexsort((np.where(valid, cand, np.iinfo(np.int64).max), -exact), axis=1)[:, :k]
        scores_out[s : s + block] = np.take_along_axis(exact, order, axis=1)
        ids_out[s : s + block] = np.where(np.take_along_axis(valid, order, axis=1),
                                          np.take_along_axis(cand, order, axis=1), -1)
    return scores_out, ids_out


@dataclass
class SearchIndex:
    index: faiss.Index | None  # None: exact search shard by shard over the on-disk embeddings
    kind: str
    nlist: int | None = None
    nprobe: int | None = None
    measured_recall: float | None = None
    on_gpu: bool = False
    store: PoolStore | None = None
    rerank: int = 0  # > 0: fetch rerank x k by approximate distance, order them exactly from the disk shards
    fallback_from: dict | None = None  # the IVF index that was tried first, when its tuning led to exact search

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.index is None:
            return exact_sharded_search(self.store, queries, k)
        if not self.rerank:
            return self.index.search(queries, k)
        _, candidates = self.index.search(queries, min(int(self.index.ntotal), k * self.rerank))
        return rerank_exact(self.store, queries, candidates, k)

    def describe(self) -> dict:
        total = int(self.index.ntotal) if self.index is not None else len(self.store)
        return {"kind": self.kind, "ntotal": total, "nlist": self.nlist, "nprobe": self.nprobe,
                "rerank": self.rerank or None, "measured_recall_at_k": self.measured_recall, "gpu": self.on_gpu,
                "fallback_from": self.fallback_from}

    def tried(self) -> dict:
        """This index as the manifest records a tuning attempt: what it was and the recall it reached."""
        return {"kind": self.kind, "nlist": self.nlist, "nprobe": self.nprobe,
                "measured_recall_at_k": self.measured_recall, "reason": "IVF needed more than a quarter of its "
                "lists for the target recall: exact search costs no more"}


def _to_gpu(index: faiss.Index) -> faiss.Index:
    options = faiss.GpuMultipleClonerOptions()
    options.useFloat16 = True
    options.shard = True
    return faiss.index_cpu_to_all_gpus(index, co=options)


def _sample_vectors(store: PoolStore, count: int, seed: int) -> np.ndarray:
    picks = np.sort(np.random.default_rng(seed).choice(len(store), size=min(count, len(store)), replace=False))
    return store.vectors(picks)


def flat_index(store: PoolStore, dim: int) -> faiss.IndexFlatIP:
    """An exact index over every pool vector, its storage sized once and filled shard by shard. faiss has no
    ``reserve``: ``add`` per shard grew the buffer by doubling, each step copying it into one twice as large while
    the old one was alive (at 1M documents the build of the 88 MiB index peaked 166 MiB above its start, 137 when
    filled in place); one ``add`` of the whole pool would need a float32 copy of it beside the index."""
    index = faiss.IndexFlatIP(dim)
    total = sum(len(store.shard(i)) for i in range(len(store.shards)))
    index.codes.resize(total * index.code_size)
    vectors = faiss.rev_swig_ptr(index.codes.data(), total * index.code_size).view(np.float32).reshape(total, dim)
    for shard, offset in zip(range(len(store.shards)), store.shard_offsets(), strict=True):
        part = store.shard(shard)
        vectors[offset : offset + len(part)] = part  # float16 on disk -> float32, as add() was given
    index.ntotal = total
    return index


def build_index(store: PoolStore, config: MineConfig) -> SearchIndex:
    n = len(store)
    dim = store.shard(0).shape[1]
    use_gpu = search_on_gpu(config.use_gpu)
    # PQ codebooks (256 centroids each) need thousands of training vectors: small pools are searched exactly
    if n <= config.flat_max or (config.ivf_pq and n < PQ_MIN_POOL):
        index = flat_index(store, dim)
        return SearchIndex(_to_gpu(index) if use_gpu else index, "flat", on_gpu=use_gpu)
    nlist = int(min(65536, max(16, round(4 * math.sqrt(n)))))
    quantizer = faiss.IndexFlatIP(dim)
    if config.ivf_pq:
        m = max(1, min(dim, config.pq_bytes or dim // 4))  # one byte per 4 dimensions: 16x less than float32
        while dim % m:
            m -= 1
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
        kind = f"ivf{nlist}_pq{m}"
    else:
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        kind = f"ivf{nlist}_flat"
    # 64 training vectors per list, but no more than 200k of them unless faiss's minimum of 39 per list needs it
    index.train(_sample_vectors(store, min(n, max(39 * nlist, min(64 * nlist, TRAIN_MAX_VECTORS))), config.seed))
    for shard in range(len(store.shards)):
        index.add(np.ascontiguousarray(store.shard(shard), dtype=np.float32))
    result = SearchIndex(index, kind, nlist=nlist, store=store, rerank=config.rerank if config.ivf_pq else 0)
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


def save_search(search: SearchIndex, directory: Path) -> None:
    """The tuned index (moved to the CPU first if on a GPU) and its description, for worker processes."""
    directory.mkdir(parents=True, exist_ok=True)
    if search.index is not None:
        index = faiss.index_gpu_to_cpu(search.index) if search.on_gpu else search.index
        faiss.write_index(index, str(directory / "index.faiss"))
    fields = {f: getattr(search, f) for f in ("kind", "nlist", "nprobe", "measured_recall", "on_gpu", "rerank",
                                               "fallback_from")}
    (directory / "index.json").write_text(json.dumps({**fields, "has_index": search.index is not None}))


def load_search(directory: Path, store: PoolStore) -> SearchIndex:
    """The index :func:`save_search` wrote, on the GPUs again if it was, with its tuned ``nprobe``."""
    fields = json.loads((directory / "index.json").read_text())
    index = faiss.read_index(str(directory / "index.faiss")) if fields.pop("has_index") else None
    if index is not None and fields["nlist"]:
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", fields["nprobe"])
    if index is not None and fields["on_gpu"]:
        index = _to_gpu(index)
    return SearchIndex(index, store=store, **fields)
