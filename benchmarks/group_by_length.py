"""Length-grouped batches (``cmtp train --group-by-length``) against the plain block shuffle, on the demo data.

1. Padding: one epoch of the training stream, each step built as the trainer builds it (``build_step``: the
   query with its instruction, the positive and the sampled hard negatives) and tokenized as it tokenizes (cut at
   the max lengths, padded to the longest text of the batch). Prints the share of token slots that are padding,
   for the query and the passage tensors, and the slots saved.
2. Speed: ``cmtp`` finetune runs with the demo's stage-3 options, each in a fresh process, plain and grouped
   interleaved (A B A B ...); samples/s from the end of step 1 to the end of the last step; medians.

    make demo   # or: cmtp build examples/pipeline.yaml --until mine   (its examples: demo-out/mine)
    python benchmarks/group_by_length.py demo-out/mine [--model builtin:me5-small] [--batch-size 4]
        [--group-size 4] [--query-max-len 48] [--max-len 128] [--steps 40] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

from common import run_job


def padding(args, grouped: bool) -> dict:
    from transformers import AutoTokenizer

    from cmtp.trainer.batches import build_step
    from cmtp.trainer.data.stream import DataSource, ParquetStream, StreamConfig
    from cmtp.transforms.embedding.registry import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(args.model).path))
    stream = StreamConfig([DataSource("demo", [args.data])], args.batch_size, seed=42, epochs=1,
                          group_by_length=grouped)
    slots = {"query": [0, 0], "passage": [0, 0]}  # [real tokens, tensor slots]
    for step, item in enumerate(ParquetStream(stream)):
        batch = build_step(item["examples"], args.group_size, "query: ", "passage: ", 42, step)
        for name, texts, limit in (("query", batch.queries, args.query_max_len),
                                   ("passage", [t for t in batch.passages if t], args.max_len)):
            lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=limit)["input_ids"]]
            slots[name][0] += sum(lengths)
            slots[name][1] += max(lengths) * len(lengths)
    return slots


def train_job(job: dict) -> dict:
    from cmtp.trainer.config import TrainConfig
    from cmtp.trainer.loop import train

    stamps: list[float] = []
    config = TrainConfig(
        stage="finetune", model=job["model"], data=[{"name": "demo", "paths": [job["data"]]}],
        output_dir=job["out"], max_steps=job["steps"], batch_size=job["batch"], train_group_size=job["group"],
        query_max_len=job["query_max_len"], passage_max_len=job["max_len"], freeze_embeddings=True, save_steps=0,
        logging_steps=10**9, resume=False, seed=1, group_by_length=job["grouped"])
    train(config, on_step=lambda step, loss: stamps.append(time.perf_counter()))
    return {"samples_per_s": job["batch"] * (len(stamps) - 1) / (stamps[-1] - stamps[0])}


def measure(job: dict) -> dict:
    result, failure = run_job(__file__, job)
    if result is None:
        raise SystemExit(f"a training run failed:\n{failure}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", nargs="?", help="mine's output folder (demo-out/mine)")
    parser.add_argument("--model", default="builtin:me5-small")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--query-max-len", type=int, default=48)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        print("RESULT " + json.dumps(train_job(json.loads(args.job))))
        return
    if not args.data:
        parser.error("give mine's output folder (make demo writes demo-out/mine)")
    print(f"{args.data}: batch {args.batch_size} x {args.group_size} passages, max length {args.query_max_len} / "
          f"{args.max_len} tokens, {args.model}")
    plain, grouped = padding(args, False), padding(args, True)
    for name in ("query", "passage"):
        (real, a), (_, b) = plain[name], grouped[name]
        print(f"{name:<8} tensors: padding {1 - real / a:6.1%} plain, {1 - real / b:6.1%} grouped; "
              f"slots {a:,} -> {b:,} ({b / a:.2f}x)")
    total_a = plain["query"][1] + plain["passage"][1]
    total_b = grouped["query"][1] + grouped["passage"][1]
    print(f"all token slots: {total_a:,} -> {total_b:,} ({total_b / total_a:.2f}x)")
    if args.skip_speed:
        return
    rates: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for grouped_run in (False, True):  # interleaved, so a drift in the machine's speed hits both
                job = {"model": args.model, "data": args.data, "out": f"{tmp}/{repeat}-{grouped_run}",
                       "steps": args.steps, "batch": args.batch_size, "group": args.group_size,
                       "query_max_len": args.query_max_len, "max_len": args.max_len, "grouped": grouped_run}
                rate = measure(job)["samples_per_s"]
                rates[grouped_run].append(rate)
                print(f"  run {repeat + 1} {'grouped' if grouped_run else 'plain  '}: {rate:6.2f} samples/s")
    a, b = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"samples/s (median of {args.repeats}): plain {a:.2f}, grouped {b:.2f} ({b / a:.2f}x)")


if __name__ == "__main__":
    main()
