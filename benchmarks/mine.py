"""Mining at scale: queries/s and peak memory of cmtp's path (embeddings in float16 disk shards, IVF with a
tuned nprobe, guards, seeded sampling) against the plain "embed everything, flat search in RAM" baseline on
the same data, one run; plus the recall@k of the approximate path against exact search.

The embedding model is the same cheap stand-in on both sides (each text maps to one of 2,000 topic centres
plus seeded noise, in 384 dimensions: clustered like real sentence embeddings), so the pool can be large on a
CPU and the comparison measures search, sampling and memory, not the encoder. Each side runs in its own
process and reports its peak RSS and its peak anonymous memory (RssAnon, sampled every 2 ms): cmtp reads the
texts and embeddings through memory maps, whose pages count in RSS but are page cache the kernel can drop,
so RssAnon is the memory the machine must really have.

    python benchmarks/mine.py [--pool 300000] [--queries 20000] [--ivf-pq]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from common import PeakMemory, chinese_passages

DIM = 384


_CENTRES = np.random.default_rng(0).normal(size=(2000, DIM)).astype(np.float32)


def hashing_encoder(texts: list[str]) -> np.ndarray:
    """Deterministic per text: a topic centre chosen by the text's hash plus noise seeded by it."""
    import zlib

    out = np.empty((len(texts), DIM), dtype=np.float32)
    for row, text in enumerate(texts):
        topic = zlib.crc32(text[:15].encode("utf-8")) % 2000  # queries share their positive's opening words
        noise = np.random.default_rng(zlib.crc32(text.encode("utf-8"))).normal(size=DIM).astype(np.float32)
        out[row] = _CENTRES[topic] + 0.6 * noise
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def make_data(pool_size: int, queries: int) -> tuple[list[str], list[str], list[int]]:
    base = chinese_passages(20000, min_chars=40, max_chars=300)
    rng = np.random.default_rng(1)
    pool = [f"{base[i % len(base)]}（{i // len(base)}）{base[int(rng.integers(len(base)))][:20]}"
            for i in range(pool_size)]
    picks = rng.choice(pool_size, size=queries, replace=False)
    return [pool[i] + "？" for i in picks], pool, picks.tolist()


def run_cmtp(pool, queries, positives, work: Path, k: int, negatives: int, ivf_pq: bool) -> dict:
    from cmtp.transforms.mine.config import MineConfig
    from cmtp.transforms.mine.index import build_index, exact_sharded_search, tune_nprobe
    from cmtp.transforms.mine.pool_store import PoolStore
    from cmtp.transforms.mine.sampling import choose_negatives

    config = MineConfig(range_start=10, range_end=k, negatives=negatives, flat_max=20_000, use_gpu=False,
                        ivf_pq=ivf_pq)
    # (the benchmark drives the pieces itself, so it reports the IVF path even where run_mine would fall back)
    store = PoolStore(work / "pool")
    store.write_texts((t, None) for t in pool)
    store.write_embeddings(hashing_encoder, 65536)
    started = time.perf_counter()
    index = build_index(store, config)
    build_s = time.perf_counter() - started
    guards, done = Counter(), 0
    started = time.perf_counter()
    for s in range(0, len(queries), 2048):
        q = hashing_encoder(queries[s : s + 2048])
        if s == 0:
            tune_nprobe(index, store, q[:256], k, 0.99)
        scores, ids = index.search(q, k)
        for row in range(len(q)):
            choose_negatives(str(s + row), queries[s + row], [pool[positives[s + row]]], [1.0], None, ids[row],
                             scores[row], store, config, negatives, guards)
            done += 1
    search_s = time.perf_counter() - started
    held = hashing_encoder(queries[-500:])
    _, truth = exact_sharded_search(store, held, k)
    _, found = index.search(held, k)
    recall = float(np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(found, truth, strict=True)]))
    return {"queries_per_s": done / search_s, "build_s": build_s, "index": index.describe(),
            "held_out_recall": recall}


def run_baseline(pool, queries, positives, k: int, negatives: int) -> dict:
    import faiss

    vectors = hashing_encoder(pool)  # everything in RAM, float32
    index = faiss.IndexFlatIP(DIM)
    index.add(vectors)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    done = 0
    for s in range(0, len(queries), 2048):
        q = hashing_encoder(queries[s : s + 2048])
        _, ids = index.search(q, k)
        for row in range(len(q)):
            candidates = [i for i in ids[row][10:k] if i != positives[s + row] and pool[i] != queries[s + row]]
            picks = rng.choice(len(candidates), size=min(negatives, len(candidates)), replace=False)
            [pool[candidates[p]] for p in picks]
            done += 1
    return {"queries_per_s": done / (time.perf_counter() - started)}


def child(which: str, pool_size: int, queries: int, k: int, negatives: int, ivf_pq: bool) -> None:
    anon = PeakMemory("anon")
    query_texts, pool, positives = make_data(pool_size, queries)
    with tempfile.TemporaryDirectory() as tmp:
        if which == "cmtp":
            result = run_cmtp(pool, query_texts, positives, Path(tmp), k, negatives, ivf_pq)
        else:
            result = run_baseline(pool, query_texts, positives, k, negatives)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["peak_anon_mib"] = anon.stop() / 2**20
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=int, default=300_000)
    parser.add_argument("--queries", type=int, default=20_000)
    parser.add_argument("--k", type=int, default=210)
    parser.add_argument("--negatives", type=int, default=15)
    parser.add_argument("--ivf-pq", action="store_true", help="cmtp side: IVF-PQ with exact re-rank from disk")
    parser.add_argument("--child", default=None)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.pool, args.queries, args.k, args.negatives, args.ivf_pq)
        return
    results = {}
    for which in ["baseline", "cmtp"]:
        proc = subprocess.run([sys.executable, __file__, "--child", which, "--pool", str(args.pool), "--queries",
                               str(args.queries), "--k", str(args.k), "--negatives", str(args.negatives)]
                              + (["--ivf-pq"] if args.ivf_pq else []),
                              capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if not line:
            raise SystemExit(proc.stderr[-3000:])
        results[which] = json.loads(line[-1][7:])
    b, c = results["baseline"], results["cmtp"]
    print(f"pool {args.pool:,}, queries {args.queries:,}, k {args.k}, {args.negatives} negatives")
    print(f"baseline (flat, all in RAM): {b['queries_per_s']:8.0f} queries/s, peak RSS {b['peak_rss_mib']:6.0f} MiB,"
          f" anonymous {b['peak_anon_mib']:6.0f} MiB")
    print(f"cmtp ({c['index']['kind']}, nprobe {c['index']['nprobe']}, rerank {c['index']['rerank']}): "
          f"{c['queries_per_s']:8.0f} queries/s, "
          f"peak RSS {c['peak_rss_mib']:6.0f} MiB, anonymous {c['peak_anon_mib']:6.0f} MiB (with guards; index build "
          f"{c['build_s']:.1f} s)")
    print(f"ratio queries/s cmtp/baseline: {c['queries_per_s'] / b['queries_per_s']:.2f}x; "
          f"peak RSS {c['peak_rss_mib'] / b['peak_rss_mib']:.2f}x, "
          f"anonymous {c['peak_anon_mib'] / b['peak_anon_mib']:.2f}x")
    print(f"recall@{args.k} of the approximate path vs exact: tuning sample {c['index']['measured_recall_at_k']:.4f},"
          f" held-out queries {c['held_out_recall']:.4f}")


if __name__ == "__main__":
    main()
