"""MCLS (``cmtp eval --mcls N``) on the longest texts of the shared evaluation sets, through ``cmtp eval``'s own
task code (``run_task``), against the plain dense vector of the same model.

Tasks (``../shared/data/eval-dev``):
* CMRC2018-long: CMRC2018 dev as retrieval, only the queries whose relevant passage is among the longest quarter
  of the corpus (in tokens), searched over the whole corpus; nDCG@10.
* SOHU-dc: Sohu 2021 short text vs long document (median 819 characters), relevance 0 / 3 / 5; Spearman of cosine.

Models: the given one with its own pooling (mean, for e5), and the same weights with [CLS] pooling, the pooling
the paper's MCLS is made for (each text's plain vector is then its first [CLS] state).

    python benchmarks/mcls.py [--model builtin:me5-small] [--every 64,128,256] [--max-queries 400]
        [--poolings own,cls]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
from common import SHARED


def tasks(model, max_queries: int, seed: int = 0):
    from cmtp.trainer.evaluation.tasks import build_task

    retrieval = build_task({"name": "CMRC2018-long", "type": "retrieval",
                            "path": str(SHARED / "eval-dev" / "retrieval" / "cmrc2018_dev")})
    data = retrieval.data
    lengths = {doc: len(ids) for doc, ids in zip(
        data["corpus"], model.tokenizer(list(data["corpus"].values()), add_special_tokens=False)["input_ids"],
        strict=True)}
    cut = np.percentile(list(lengths.values()), 75)
    long = sorted(q for q, rel in data["qrels"].items() if q in data["queries"] and
                  any(lengths[d] >= cut for d in rel if d in lengths))
    rng = np.random.default_rng(seed)
    chosen = sorted(str(q) for q in rng.choice(long, min(max_queries, len(long)), replace=False))
    data = {"queries": {q: data["queries"][q] for q in chosen}, "qrels": {q: data["qrels"][q] for q in chosen},
            "corpus": data["corpus"]}
    retrieval = dataclasses.replace(retrieval, data=data)
    sohu = build_task({"name": "SOHU-dc", "type": "sts", "path": str(SHARED / "eval-dev" / "long" / "dc-test.jsonl"),
                       "columns": {"sentence1": "sentence1", "sentence2": "sentence2", "score": "label"}})
    return [retrieval, sohu], int(cut)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="builtin:me5-small")
    parser.add_argument("--every", default="64,128,256", help="N values of --mcls")
    parser.add_argument("--max-queries", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--poolings", default="own,cls", help="own (the model's pooling), cls, or both")
    args = parser.parse_args()

    from cmtp.trainer.encoder import load_encoder
    from cmtp.trainer.evaluation.runner import EvalOptions, run_task

    everies = [int(x) for x in args.every.split(",")]
    for pooling in args.poolings.split(","):
        model = load_encoder(args.model, pooling=None if pooling == "own" else "cls").eval()
        task_list, cut = tasks(model, args.max_queries)
        print(f"{args.model}, {pooling} pooling, max {model.max_seq_length} tokens "
              f"(CMRC2018-long: {task_list[0].size()} queries, passages >= {cut} tokens)")
        for task in task_list:
            cells = []
            for every in [0, *everies]:
                started = time.perf_counter()
                result = run_task(model, task, EvalOptions(mcls=every, batch_size=args.batch_size, progress=False))
                label = "plain" if every == 0 else f"mcls {every}"
                cells.append(f"{label} {100 * result.main_score:6.2f}")
                print(f"  {task.name:<14} {label:<9} {result.main_metric} {100 * result.main_score:6.2f} "
                      f"({time.perf_counter() - started:5.1f} s)", flush=True)
            print(f"  {task.name:<14} " + " | ".join(cells))


if __name__ == "__main__":
    main()
