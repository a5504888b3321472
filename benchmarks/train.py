"""Trainer speed and memory, one run, two parts.

1. Throughput: ``cmtp`` training (trainer.loop.train, streaming Parquet) against ``SentenceTransformerTrainer``
   with ``MultipleNegativesRankingLoss`` on the same model, the same LCSTS title-passage pairs, the same
   batch size, sequence length, learning-rate schedule and temperature (scale 20 = temperature 0.05).
   Samples/s is timed from the end of step 1 to the end of the last step (load, warm-up and saving left
   out); peak memory is the process's peak RSS up to the end of the last step (CUDA: peak allocated).
2. Largest batch: peak memory of one cmtp step for growing batches without and with gradient caching;
   the budget is the peak of an uncached batch of ``--budget-batch`` (64), so the table answers "which
   batch fits in the memory of a batch of 64".

Every measurement runs in a fresh Python process, so peaks do not leak from one into the next.

    python benchmarks/train.py [--model builtin:me5-small] [--batch-size 32] [--steps 6] [--max-len 128]
                               [--search-max 4096] [--search-len 32] [--chunk 64] [--skip-search]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import PeakMemory, lcsts_pairs, run_job

QUERY_PROMPT, PASSAGE_PROMPT = "query: ", "passage: "


# ---------------------------------------------------------------------------------------------- measuring
def _result(kind: str, batch: int, stamps: list[float], rss: int) -> dict:
    import torch

    timed = len(stamps) - 1
    rate = batch * timed / (stamps[-1] - stamps[0]) if timed > 0 else None
    cuda = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    return {"kind": kind, "batch": batch, "samples_per_s": rate, "peak_rss_mib": rss / 2**20,
            "peak_cuda_mib": cuda / 2**20 if cuda else None, "steps": len(stamps)}


def run_cmtp(job: dict) -> dict:
    from cmtp.trainer.config import TrainConfig
    from cmtp.trainer.loop import train

    sampler, stamps = PeakMemory(), []
    config = TrainConfig(**dict(
        stage="contrastive", model=job["model"], data=[{"name": "lcsts", "paths": [job["data"]]}],
        output_dir=job["out"], max_steps=job["steps"], batch_size=job["batch"], learning_rate=2e-5,
        temperature=0.05, train_group_size=1, gradcache_chunk=job.get("chunk", 0), query_max_len=job["max_len"],
        passage_max_len=job["max_len"], query_prompt=QUERY_PROMPT, passage_prompt=PASSAGE_PROMPT,
        save_steps=10**9, logging_steps=10**9, freeze_embeddings=job["freeze"], resume=False, seed=1))
    peak = []

    def on_step(step, loss):
        stamps.append(time.perf_counter())
        if step == job["steps"]:
            peak.append(sampler.stop())  # before the final checkpoint is written

    train(config, on_step=on_step)
    return _result("cmtp" + (f" gradcache {job['chunk']}" if job.get("chunk") else ""), job["batch"], stamps,
                   peak[0])


def run_sentence_transformers(job: dict) -> dict:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback

    from cmtp.transforms.embedding import load_sentence_transformer

    sampler, stamps, peak = PeakMemory(), [], []
    model = load_sentence_transformer(job["model"], device="cuda" if _cuda() else "cpu")
    model.max_seq_length = job["max_len"]
    if job["freeze"]:
        model[0].auto_model.get_input_embeddings().weight.requires_grad_(False)
    pairs = json.loads(Path(job["pairs"]).read_text(encoding="utf-8"))
    dataset = Dataset.from_dict({"anchor": [QUERY_PROMPT + q for q, _ in pairs],
                                 "positive": [PASSAGE_PROMPT + p for _, p in pairs]})

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())
            if state.global_step == job["steps"]:
                peak.append(sampler.stop())

    args = SentenceTransformerTrainingArguments(
        output_dir=job["out"], per_device_train_batch_size=job["batch"], max_steps=job["steps"], learning_rate=2e-5,
        warmup_ratio=0.1, weight_decay=0.01, max_grad_norm=1.0, save_strategy="no", report_to="none",
        logging_steps=10**9, dataloader_drop_last=True, seed=1, use_cpu=not _cuda(), disable_tqdm=True)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset,
                                         loss=MultipleNegativesRankingLoss(model, scale=20.0), callbacks=[Stamp()])
    trainer.train()
    return _result("sentence-transformers MNRL", job["batch"], stamps, peak[0])


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def measure(job: dict) -> dict:
    """Runs one job in a fresh interpreter (this file with --job) and returns its result."""
    result, failure = run_job(__file__, job)
    if result is None:
        return {"kind": job["runner"], "batch": job["batch"], "error": failure[-600:]}
    return result


# ---------------------------------------------------------------------------------------------- data
def write_data(directory: Path, pairs: list[tuple[str, str]]) -> tuple[str, str]:
    import pyarrow.parquet as pq

    from cmtp.schemas import TRAINING_EXAMPLE, rows_to_table

    rows = [{"example_id": f"lcsts-{i}", "query": q, "pos": [p], "neg": [], "instruction": None, "source": "lcsts",
             "task": "pair", "pos_scores": [], "neg_scores": [], "neg_kinds": []} for i, (q, p) in enumerate(pairs)]
    (directory / "examples").mkdir(parents=True, exist_ok=True)
    pq.write_table(rows_to_table(rows, TRAINING_EXAMPLE), directory / "examples" / "part-00000.parquet",
                   row_group_size=256)
    (directory / "pairs.json").write_text(json.dumps(pairs, ensure_ascii=False), encoding="utf-8")
    return str(directory / "examples"), str(directory / "pairs.json")


# ---------------------------------------------------------------------------------------------- report
def _fmt(r: dict) -> str:
    if "error" in r:
        return f"{r['kind']:<32} batch {r['batch']:>5}: FAILED ({r['error'].strip().splitlines()[-1]})"
    rate = f"{r['samples_per_s']:8.1f} samples/s" if r.get("samples_per_s") else " " * 18
    cuda = f", peak CUDA {r['peak_cuda_mib']:8.0f} MiB" if r.get("peak_cuda_mib") else ""
    return f"{r['kind']:<32} batch {r['batch']:>5}: {rate}  peak RSS {r['peak_rss_mib']:8.0f} MiB{cuda}"


def _peak(r: dict) -> float:
    return r.get("peak_cuda_mib") or r["peak_rss_mib"]


def throughput(args, data: str, pairs: str, work: Path) -> None:
    common = dict(model=args.model, batch=args.batch_size, steps=args.steps, max_len=args.max_len,
                  freeze=args.freeze_embeddings, data=data, pairs=pairs)
    print(f"== throughput: {args.model}, batch {args.batch_size}, {args.max_len} tokens, {args.steps} steps "
          f"(rate over steps 2..{args.steps}), embeddings {'frozen' if args.freeze_embeddings else 'trained'}")
    base = measure(dict(common, runner="st", out=str(work / "st")))
    print(_fmt(base), flush=True)
    ours = measure(dict(common, runner="cmtp", out=str(work / "cmtp")))
    print(_fmt(ours), flush=True)
    if "error" not in base and "error" not in ours:
        print(f"cmtp / sentence-transformers: speed {ours['samples_per_s'] / base['samples_per_s']:.2f}x, "
              f"peak memory {_peak(ours) / _peak(base):.2f}x")


def largest_batch(args, data: str, pairs: str, work: Path) -> None:
    common = dict(model=args.model, steps=1, max_len=args.search_len, freeze=args.freeze_embeddings, data=data,
                  pairs=pairs, runner="cmtp")
    print(f"\n== largest batch: one step, {args.search_len} tokens; budget = peak of an uncached batch of "
          f"{args.budget_batch}")
    budget_run = measure(dict(common, batch=args.budget_batch, out=str(work / "b")))
    print(_fmt(budget_run), flush=True)
    if "error" in budget_run:
        return
    budget = _peak(budget_run)
    best = {}
    for chunk in (0, args.chunk):
        best[chunk] = args.budget_batch if chunk == 0 else 0
        batch = args.budget_batch * 2 if chunk == 0 else args.chunk
        while batch <= args.search_max:
            r = measure(dict(common, batch=batch, chunk=chunk, out=str(work / f"s{chunk}-{batch}")))
            within = "error" not in r and _peak(r) <= budget * (1 + args.tolerance)
            print(_fmt(r) + ("" if "error" in r else f"  {_peak(r) / budget:.2f}x budget"), flush=True)
            if not within:
                break
            best[chunk] = batch
            batch *= 2
    capped = " (the --search-max cap)" if best[args.chunk] == args.search_max else ""
    print(f"within {budget:.0f} MiB (+{args.tolerance:.0%}): largest batch without gradient caching "
          f"{best[0]}, with gradient caching (chunk {args.chunk}) {best[args.chunk]}{capped}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin:me5-small")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--max-len", type=int, default=128, help="tokens, queries and passages (throughput)")
    parser.add_argument("--freeze-embeddings", action="store_true", help="on both sides")
    parser.add_argument("--search-len", type=int, default=32, help="tokens in the largest-batch search")
    parser.add_argument("--search-max", type=int, default=4096)
    parser.add_argument("--budget-batch", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=64, help="gradient-caching chunk (texts)")
    parser.add_argument("--tolerance", type=float, default=0.05, help="allowed excess over the budget")
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        job = json.loads(args.job)
        result = run_cmtp(job) if job["runner"] == "cmtp" else run_sentence_transformers(job)
        print("RESULT " + json.dumps(result), flush=True)
        return
    from cmtp.transforms.embedding import resolve_model

    resolve_model(args.model)  # convert / fetch once, outside the timed processes
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        need = max(args.batch_size * args.steps, args.search_max if not args.skip_search else 0)
        data, pairs = write_data(work / "data", lcsts_pairs(need))
        if not args.skip_throughput:
            throughput(args, data, pairs, work)
        if not args.skip_search:
            largest_batch(args, data, pairs, work)


if __name__ == "__main__":
    main()
