"""Turning streamed examples into the texts of one step: queries with their instruction, and for each query
a group of ``train_group_size`` passages (its positive first, then hard negatives), with teacher scores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmtp.transforms.common.ids import stable_id


@dataclass
class StepBatch:
    queries: list[str]
    passages: list[str]
    teacher: np.ndarray | None  # [B, group] or None when scores are missing
    filler: list[bool] | None = None  # per passage slot: padding of a row without hard negatives (None: no padding)


def build_step(examples: list[dict], group_size: int, query_prompt: str, passage_prompt: str, seed: int,
               step: int) -> StepBatch:
    """A row without hard negatives has its group padded with empty slots, marked in ``filler``: they are not
    embedded and the loss leaves them out, so its negatives are the batch's other passages. (Padding with other
    rows' positives embedded passages the batch already held, up to ``group_size`` times the work, and put
    copies of a query's own positive among its candidates: ln(group) added to the loss, uneven weights when the
    batch is smaller than the group.) A padded batch has no complete teacher scores."""
    queries, passages, teacher, filler = [], [], [], []
    for ex in examples:
        rng = np.random.default_rng([seed, step, int(stable_id(ex["example_id"]), 16) & 0xFFFFFFFF])
        instruction = ex.get("instruction")
        queries.append((instruction if instruction is not None else query_prompt) + ex["query"])
        pos_i = int(rng.integers(len(ex["pos"])))
        group = [ex["pos"][pos_i]]
        scores = [ex["pos_scores"][pos_i]] if ex.get("pos_scores") else None
        negs = ex.get("neg") or []
        if group_size > 1 and negs:
            picks = rng.choice(len(negs), size=group_size - 1, replace=len(negs) < group_size - 1)
            group += [negs[i] for i in picks]
            if scores is not None and ex.get("neg_scores"):
                scores += [ex["neg_scores"][i] for i in picks]
        passages += [passage_prompt + t for t in group] + [""] * (group_size - len(group))
        filler += [False] * len(group) + [True] * (group_size - len(group))
        if scores is not None and len(scores) == group_size:
            teacher.append(scores)
    complete = len(teacher) == len(examples)
    return StepBatch(queries, passages, np.array(teacher, dtype=np.float32) if complete else None,
                     filler if any(filler) else None)
