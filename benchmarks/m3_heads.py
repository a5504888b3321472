"""BGE-M3 heads on the shared sample: do the trained sparse and multi-vector heads beat the same heads untrained, is
the hybrid at least as good as dense alone, and what does self-knowledge distillation change?

Trains the proxy (builtin:me5-small-l2) with ``--heads dense,sparse,multivector`` on the training examples a
``cmtp build`` of ../shared/data/raw made (``benchmarks/ablation_shared.yaml``: its ``mine/`` folder), with
self-distillation on and off, over 3 seeds. Each run evaluates CMRC2018-dev retrieval at its start (the heads as
initialised from the seed) and at its end, by each head and the hybrid; the table gives mean +- sd over seeds.

    cmtp build benchmarks/ablation_shared.yaml --until mine        # the corpus, once (about 25 min on 2 cores)
    python benchmarks/m3_heads.py --data /tmp/cmtp-ablation/mine --work /tmp/m3exp

Runs whose ``eval.json`` exists are reused, so a killed benchmark continues.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from common import ROOT

HEADS = ("dense", "sparse", "multivector", "hybrid")
VARIANTS = {"self-distill": "--self-distill", "no-self-distill": "--no-self-distill"}


def train(cmtp: str, data: str, out: Path, flag: str, seed: int, args) -> None:
    command = [cmtp, "train", "--stage", "finetune", "--model", args.model, "--data", data,
               "--heads", "dense,sparse,multivector", flag, "--max-steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--train-group-size", "4", "--query-max-len", "32",
               "--passage-max-len", "128", "--eval", str(ROOT / "examples" / "eval" / "cmrc2018-dev"),
               "--eval-max-per-task", str(args.queries), "--learning-rate", str(args.lr),
               "--head-learning-rate", str(args.head_lr), "--seed", str(seed), "--save-steps", "0", "--out", str(out)]
    with open(out.with_suffix(".log"), "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def head_scores(entry: dict) -> dict[str, float]:
    """One evaluation's CMRC2018-dev nDCG@10 by head (x 100)."""
    (task,) = entry["report"]["tasks"]
    metrics = task["metrics"]
    return {h: 100 * metrics["ndcg_at_10" if h == "dense" else f"{h}_ndcg_at_10"] for h in HEADS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/tmp/cmtp-ablation/mine", help="mine's output (training examples)")
    parser.add_argument("--work", default="/tmp/m3exp")
    parser.add_argument("--model", default="builtin:me5-small-l2")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="self-distill, no-self-distill or both")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--queries", type=int, default=200, help="CMRC2018-dev queries evaluated")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--head-lr", type=float, default=1e-3)
    args = parser.parse_args()
    cmtp = str(Path(sys.executable).with_name("cmtp"))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, list[dict]]] = {}
    variants = {name: VARIANTS[name] for name in args.variants.split(",")}
    for seed in (int(s) for s in args.seeds.split(",")):
        for name, flag in variants.items():
            out = work / f"{name}-{seed}"
            if not (out / "eval.json").exists():
                train(cmtp, args.data, out, flag, seed, args)
            history = json.loads((out / "eval.json").read_text())["history"]
            results.setdefault(name, {}).setdefault("start", []).append(head_scores(history[0]))
            results[name].setdefault("end", []).append(head_scores(history[-1]))

    def cell(values: list[float]) -> str:
        return f"{np.mean(values):.2f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.2f}"

    print(f"CMRC2018-dev nDCG@10 x 100 ({args.queries} queries), {args.model}, {args.steps} steps x "
          f"{args.batch_size} queries, mean ± sd over {len(args.seeds.split(','))} seeds\n")
    print("| run | " + " | ".join(HEADS) + " |\n|---|" + "---|" * len(HEADS))
    start = next(iter(results.values()))["start"]  # the same seeds start from the same heads in both variants
    print("| untrained heads (start) | " + " | ".join(cell([r[h] for r in start]) for h in HEADS) + " |")
    for name in variants:
        end = results[name]["end"]
        print(f"| trained, {name} | " + " | ".join(cell([r[h] for r in end]) for h in HEADS) + " |")
    print("\ndelta against the untrained heads (paired by seed):")
    for name in variants:
        end = results[name]["end"]
        starts = results[name]["start"]
        print(f"  {name}: " + ", ".join(f"{h} {cell([e[h] - s[h] for e, s in zip(end, starts, strict=True)])}"
                                          for h in HEADS)
              + "; hybrid - dense " + cell([e["hybrid"] - e["dense"] for e in end]))


if __name__ == "__main__":
    main()
