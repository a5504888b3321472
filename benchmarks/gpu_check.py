"""Exercises every GPU path of cmtp and prints its figures; without a GPU it says so and exits 0.

* score: fp16 against fp32 scores of the same pairs (max difference, Spearman, pairs/s of each)
* mine: faiss-gpu exact (flat) and IVF search against the CPU results (recall@10, queries/s)
* train: bf16 and fp16 autocast, each with and without GradCache (finite, falling loss; samples/s)
* distributed: a 1-GPU NCCL process group (all_reduce, all_gather with autograd)

    bash benchmarks/gpu_check.sh        # or: .venv/bin/python benchmarks/gpu_check.py --pairs 512
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np  # noqa: I001
import torch
from common import lcsts_pairs


def check_scoring(pairs: list[tuple[str, str]]) -> None:
    from scipy.stats import spearmanr

    from cmtp.transforms.score.config import ScoreConfig
    from cmtp.transforms.score.scoring import PairScorer

    titles, passages = [t for t, _ in pairs], [p for _, p in pairs]
    results = {}
    for fp16 in (False, True):
        scorer = PairScorer(ScoreConfig(model="builtin:me5-small", device="cuda", fp16=fp16))
        scorer.score(titles[:64], passages[:64])  # warm-up
        torch.cuda.synchronize()
        started = time.perf_counter()
        results[fp16] = scorer.score(titles, passages)
        torch.cuda.synchronize()
        print(f"score fp16={fp16}: {len(pairs) / (time.perf_counter() - started):,.0f} pairs/s")
    diff = np.abs(results[True] - results[False])
    print(f"score fp16 vs fp32: max |diff| {diff.max():.2e}, mean {diff.mean():.2e}, Spearman "
          f"{spearmanr(results[True], results[False])[0]:.6f}")


def check_faiss(n: int = 200_000, dim: int = 384, queries: int = 2000) -> None:
    import faiss

    from cmtp.transforms.mine.config import MineConfig
    from cmtp.transforms.mine.index import build_index, exact_sharded_search, tune_nprobe
    from cmtp.transforms.mine.pool_store import PoolStore

    if not hasattr(faiss, "get_num_gpus") or faiss.get_num_gpus() == 0:
        print("faiss: no GPU build or no GPU visible (pip install 'cmtp[gpu]'): skipped")
        return
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(256, dim)).astype(np.float32)
    pool = centres[rng.integers(256, size=n)] + 0.5 * rng.normal(size=(n, dim)).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    q = pool[rng.choice(n, queries, replace=False)] + 0.05 * rng.normal(size=(queries, dim)).astype(np.float32)
    store = PoolStore(Path(tempfile.mkdtemp()) / "pool")
    texts = [f"p{i}" for i in range(n)]
    store.write_texts(zip(texts, [None] * n, strict=True))
    lookup = dict(zip(texts, pool, strict=True))
    store.write_embeddings(lambda batch: np.stack([lookup[t] for t in batch]), 65536)
    _, truth = exact_sharded_search(store, q, 10)
    for kind, flat_max in [("flat", n), ("ivf", 10_000)]:
        for gpu in (False, True):
            index = build_index(store, MineConfig(flat_max=flat_max, use_gpu=gpu))
            if index.nlist:
                tune_nprobe(index, store, q[:500], 10, 0.99)
            started = time.perf_counter()
            _, found = index.search(q, 10)
            rate = queries / (time.perf_counter() - started)
            recall = np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(found, truth, strict=True)])
            print(f"faiss {kind} gpu={gpu}: recall@10 {recall:.4f} vs exact CPU, {rate:,.0f} queries/s "
                  f"(nprobe {index.nprobe})")


def check_training(work: Path) -> None:
    import pyarrow.parquet as pq

    from cmtp.schemas import PAIR, rows_to_table
    from cmtp.trainer.config import TrainConfig
    from cmtp.trainer.loop import train

    pairs = lcsts_pairs(512)
    rows = [{"pair_id": f"p{i}", "source": "lcsts", "source_file": "f", "record_key": str(i), "title": t,
             "passage": p, "meta": "{}"} for i, (t, p) in enumerate(pairs)]
    (work / "pairs").mkdir(parents=True, exist_ok=True)
    pq.write_table(rows_to_table(rows, PAIR), work / "pairs" / "part-0.parquet")
    for precision in ("bf16", "fp16"):
        for chunk in (0, 16):
            out = work / f"train-{precision}-{chunk}"
            config = TrainConfig(**dict(
                stage="contrastive", model="builtin:me5-small", data=[{"name": "p", "paths": [str(work / "pairs")]}],
                output_dir=str(out), max_steps=8, batch_size=64, gradcache_chunk=chunk, precision=precision,
                save_steps=0, passage_max_len=128, resume=False))
            losses = []
            started = time.perf_counter()
            summary = train(config, on_step=lambda s, v, losses=losses: losses.append(v))
            ok = all(np.isfinite(losses))
            print(f"train {precision} gradcache={chunk}: losses finite {ok}, {losses[0]:.4f} -> {losses[-1]:.4f}, "
                  f"{summary['samples_per_second']:.1f} samples/s ({time.perf_counter() - started:.0f} s)")


def check_nccl() -> None:
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_gather

    from tests.dist_worker import free_port

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    dist.init_process_group("nccl", rank=0, world_size=1)
    x = torch.arange(4.0, device="cuda", requires_grad=True)
    total = x.detach().clone()
    dist.all_reduce(total)
    gathered = torch.cat(all_gather(x))
    gathered.sum().backward()
    print(f"nccl: all_reduce ok {torch.equal(total, x.detach())}, all_gather with autograd ok "
          f"{torch.equal(x.grad, torch.ones(4, device='cuda'))}")
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=1024)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible: every GPU path skipped (nothing failed)")
        return
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    check_scoring(lcsts_pairs(args.pairs))
    check_faiss()
    check_training(Path(tempfile.mkdtemp(prefix="gpu-check-")))
    check_nccl()


if __name__ == "__main__":
    main()
