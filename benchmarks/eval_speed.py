"""``cmtp eval`` encoding speed against a plain ``SentenceTransformer.encode`` loop over the same texts.

The texts are an STS task's (each pair's two sentences, with the repeats real STS sets have) and a retrieval
corpus's passages; both sides use the same model, batch size and maximum length. cmtp encodes each distinct
text once per task.

    .venv/bin/python benchmarks/eval_speed.py --pairs 600
"""

from __future__ import annotations

import argparse
import time

import numpy as np  # noqa: I001
from common import ROOT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=600)
    parser.add_argument("--passages", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-seq-length", type=int, default=256)
    args = parser.parse_args()
    from cmtp.trainer.evaluation import EvalOptions, evaluate, load_tasks
    from cmtp.trainer.evaluation.runner import load_eval_model

    options = EvalOptions(batch_size=args.batch_size, max_seq_length=args.max_seq_length, progress=False)
    model = load_eval_model("builtin:me5-small", options)
    tasks = load_tasks([str(ROOT / "examples" / "eval" / "stsb-zh")], args.pairs) + \
        load_tasks([str(ROOT / "examples" / "eval" / "cmrc2018-dev")], args.passages // 5)
    texts = []
    for t in tasks:
        d = t.data
        texts += d["sentence1"] + d["sentence2"] if t.type == "sts" else \
            list(d["queries"].values()) + list(d["corpus"].values())
    model.max_seq_length = args.max_seq_length
    model.encode(texts[:64], batch_size=args.batch_size)  # warm-up
    started = time.perf_counter()
    for t in tasks:  # the plain loop: every text of every task, as a user would write it
        d = t.data
        if t.type == "sts":
            a = model.encode(d["sentence1"], batch_size=args.batch_size, normalize_embeddings=True)
            b = model.encode(d["sentence2"], batch_size=args.batch_size, normalize_embeddings=True)
            np.einsum("ij,ij->i", a, b)
        else:
            model.encode(list(d["queries"].values()), batch_size=args.batch_size, normalize_embeddings=True)
            model.encode(list(d["corpus"].values()), batch_size=args.batch_size, normalize_embeddings=True)
    plain = time.perf_counter() - started
    started = time.perf_counter()
    report = evaluate(model, tasks, options)
    ours = time.perf_counter() - started
    print(f"{len(texts)} texts ({sum(t.texts_encoded for t in report.tasks)} distinct), batch {args.batch_size}, "
          f"max length {args.max_seq_length}")
    print(f"plain encode loop: {len(texts) / plain:.1f} texts/s; cmtp eval (metrics included): "
          f"{len(texts) / ours:.1f} texts/s -> {plain / ours:.2f}x")


if __name__ == "__main__":
    main()
