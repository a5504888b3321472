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


def build_step(examples: list[dict], group_size: int, query_prompt: str, passage_prompt: str, seed: int,
               step: int) -> StepBatch:
    """Rows short of negatives are filled with other examples' positives (random in-batch negatives); then
    the batch has no complete teacher scores."""
    queries, passages, teacher, complete = [], [], [], True
    for j, ex in enumerate(examples):
        rng = np.random.default_rng([seed, step, int(stable_id(ex["example_id"]), 16) & 0xFFFFFFFF])
        instruction = ex.get("instruction")
        queries.append((instruction if instruction is not None else query_prompt) + ex["query"])
        pos_i = int(rng.integers(len(ex["pos"])))
        group = [ex["pos"][pos_i]]
        scores = [ex["pos_scores"][pos_i]] if ex.get("pos_scores") else None
        negs = ex.get("neg") or []
        if group_size > 1:
            need = group_size - 1
            if negs:
                picks = rng.choice(len(negs), size=need, replace=len(negs) < need)
            else:  # no hard negatives: other examples' positives will serve in-batch only
                picks = []
            group += [negs[i] for i in picks]
            if scores is not None and ex.get("neg_scores"):
                scores += [ex["neg_scores"][i] for i in picks]
            others = [examples[(j + k) % len(examples)]["pos"][0] for k in range(1, len(examples))] or group[:1]
            k = 0
            while len(group) < group_size:
                group.append(others[k % len(others)])
                k += 1
                scores = None
        passages += [passage_prompt + t for t in group]
        if scores is None or len(scores) != group_size:
            complete = False
        else:
            teacher.append(scores)
    return StepBatch(queries, passages, np.array(teacher, dtype=np.float32) if complete else None)
