"""Does training on the cmtp corpus make the model better? Builds a corpus from ../shared/data/raw (extract ->
dedup -> score a seeded subset -> mine), trains stage 2, stage 3 from stage 2, and stage 3 alone from the base
model with one recipe, and evaluates base and trained models on the shared dev sets (benchmarks/eval-dev.yaml)
with ``cmtp eval``'s code. Prints the table (scores x 100, delta against base).

    .venv/bin/python benchmarks/quality.py --work /tmp/quality            # the recipe of docs/recipes.md
    .venv/bin/python benchmarks/quality.py --work /tmp/quality --lr 2e-5 --temperature 0.02 --batch-size 32 \\
        --tag old-defaults                                               # the recipe the issue measured

Corpus stages are cached in --work (delete a folder to redo it); each recipe trains into its own --tag folder.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pyarrow.parquet as pq
from common import ROOT, SHARED

RAW = SHARED / "raw"
SOURCES = ["wudao=" + str(RAW / "wudao/*.json"), "zhihu=" + str(RAW / "zhihu/*.jsonl"),
           "csl=" + str(RAW / "csl/ts_dev.tsv"), "news=" + str(RAW / "news/inews_train.jsonl"),
           "lcsts=" + str(RAW / "lcsts/*.tsv")]


def build_corpus(work: Path, pairs: int, seed: int) -> tuple[Path, Path]:
    from cmtp.pipelines.dedup import run_dedup
    from cmtp.pipelines.extract import parse_source, run_extract
    from cmtp.pipelines.mine.run import run_mine
    from cmtp.pipelines.score import run_score
    from cmtp.transforms.mine.config import MineConfig
    from cmtp.transforms.score.config import ScoreConfig

    if not (work / "extract" / "manifest.json").exists():
        run_extract([parse_source(s, {}) for s in SOURCES], str(work / "extract"), workers=2)
    if not (work / "dedup" / "manifest.json").exists():
        run_dedup(str(work / "extract"), str(work / "dedup"), workers=2)
    sample = work / "sample" / "pairs"
    if not sample.exists():
        table = pq.read_table(work / "dedup" / "pairs")
        import numpy as np

        picks = np.sort(np.random.default_rng(seed).choice(table.num_rows, min(pairs, table.num_rows), replace=False))
        sample.mkdir(parents=True)
        pq.write_table(table.take(picks), sample / "part-00000-of-00001.parquet")
    if not (work / "score" / "manifest.json").exists():
        run_score(str(work / "sample"), str(work / "score"),
                  ScoreConfig(model="builtin:me5-small", max_seq_length=128), target_keep_rate=0.8)
    if not (work / "mine" / "manifest.json").exists():
        run_mine(str(work / "score"), str(work / "mine"),
                 MineConfig(negatives=7, range_start=10, range_end=100, max_seq_length=128,
                            train_instruction="query: "))
    return work / "score" / "kept", work / "mine" / "examples"


def train(stage: str, model: str, data: Path, out: Path, args, steps: int) -> str:
    from cmtp.trainer.config import TrainConfig
    from cmtp.trainer.loop import train as run_train

    if (out / "model" / "model.safetensors").exists():
        return str(out / "model")
    config = TrainConfig(**dict(
        stage=stage, model=model, data=[{"name": "d", "paths": [str(data)]}], output_dir=str(out), max_steps=steps,
        batch_size=args.batch1 if stage == "retromae" else args.batch_size,
        gradcache_chunk=0 if stage == "retromae" else args.chunk,
        learning_rate=None if stage == "retromae" else args.lr,
        temperature=args.temperature, train_group_size=args.group_size if stage == "finetune" else 1,
        query_max_len=48, passage_max_len=args.passage_len, freeze_embeddings=args.freeze_embeddings,
        save_steps=0, warmup_ratio=0.1, seed=args.seed))
    started = time.perf_counter()
    summary = run_train(config)
    print(f"  {out.name}: {steps} steps in {time.perf_counter() - started:.0f} s, loss {summary['first_loss']:.4f} "
          f"-> {summary['final_loss']:.4f}, saturation warnings {summary['saturation_warnings']}", flush=True)
    return summary["model"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/cmtp-quality")
    parser.add_argument("--tag", default="recipe")
    parser.add_argument("--pairs", type=int, default=3000, help="pairs scored (a seeded subset of the dedup output)")
    parser.add_argument("--steps2", type=int, default=20)
    parser.add_argument("--steps3", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=32, help="GradCache chunk (0: off)")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=None, help="default: the stage's")
    parser.add_argument("--temperature", type=float, default=None, help="default: the stage's")
    parser.add_argument("--passage-len", type=int, default=128)
    parser.add_argument("--freeze-embeddings", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--max-per-task", type=int, default=400)
    parser.add_argument("--runs", default="base,stage2,stage2+3,stage3",
                        help="which rows to produce; stage1+2+3 adds RetroMAE (--steps1) before stages 2 and 3")
    parser.add_argument("--steps1", type=int, default=10, help="RetroMAE steps for the stage1+2+3 row")
    parser.add_argument("--batch1", type=int, default=8, help="RetroMAE texts per step")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    pairs, examples = build_corpus(work, args.pairs, args.seed)
    print(f"corpus ready in {time.perf_counter() - started:.0f} s", flush=True)
    runs = args.runs.split(",")
    models = {"base": "builtin:me5-small"}
    out = work / args.tag
    if "stage2" in runs or "stage2+3" in runs:
        models["stage2"] = train("contrastive", "builtin:me5-small", pairs, out / "stage2", args, args.steps2)
    if "stage2+3" in runs:
        models["stage2+3"] = train("finetune", models["stage2"], examples, out / "stage2+3", args, args.steps3)
    if "stage3" in runs:
        models["stage3"] = train("finetune", "builtin:me5-small", examples, out / "stage3", args, args.steps3)
    if "stage1+2+3" in runs:
        stage1 = train("retromae", "builtin:me5-small", work / "extract" / "pretrain", out / "stage1", args,
                       args.steps1)
        stage12 = train("contrastive", stage1, pairs, out / "stage1+2", args, args.steps2)
        models["stage1+2+3"] = train("finetune", stage12, examples, out / "stage1+2+3", args, args.steps3)

    from cmtp.trainer.evaluation import EvalOptions, evaluate, load_tasks

    tasks = load_tasks([str(ROOT / "benchmarks" / "eval-dev.yaml")], args.max_per_task, args.seed)
    results = {}
    for name in [r for r in ["base", "stage2", "stage2+3", "stage3", "stage1+2+3"] if r in runs]:
        cache = (work / "eval-base.json") if name == "base" else out / f"eval-{name.replace('+', '_')}.json"
        if cache.exists():
            results[name] = json.loads(cache.read_text())
            continue
        report = evaluate(models[name], tasks, EvalOptions(progress=False, max_seq_length=512))
        results[name] = {"scores": {t.name: t.main_score for t in report.tasks}, "average": report.average,
                         "texts_per_second": report.texts_per_second()}
        cache.write_text(json.dumps(results[name], indent=2))
    names = [t.name for t in tasks]
    print(f"\nrecipe {args.tag}: {vars(args)}")
    print("| model | " + " | ".join(names) + " | average |")
    print("|---" * (len(names) + 2) + "|")
    base = results["base"]
    for name, r in results.items():
        cells = [f"{100 * r['scores'][n]:.2f}" + ("" if name == "base" else
                                                   f" ({100 * (r['scores'][n] - base['scores'][n]):+.2f})")
                 for n in names]
        print(f"| {name} | " + " | ".join(cells) + f" | {100 * r['average']:.2f} |")


if __name__ == "__main__":
    main()
