"""Evaluation inside ``cmtp train``: the starting model, every ``--eval-steps``, and the final model on the same
tasks (``--eval`` task folders, and/or a held-out share of the training data as a retrieval task), logged to
TensorBoard, with ``--keep-best`` and a loud warning when training made the model worse."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .config import TrainConfig
from .evaluation import EvalOptions, EvalTask, Report, compare_reports, evaluate, load_tasks
from .evaluation.task_data import retrieval_data

HOLDOUT_LIMIT = 2000  # held-out rows evaluated at most (a seeded, stable share of the training data)


def holdout_task(config: TrainConfig, prompts: tuple[str, str]) -> EvalTask | None:
    """The held-out rows as retrieval: each query against every held-out positive and negative."""
    from .data.stream import holdout_rows

    rows = holdout_rows([p for d in config.data for p in d.paths], config.eval_holdout, HOLDOUT_LIMIT)
    if not rows:
        return None
    data = retrieval_data([(r["query"], r["pos"], r.get("neg") or []) for r in rows])
    instruction = next((r.get("instruction") for r in rows if r.get("instruction") is not None), None)
    query_prompt = config.query_prompt if config.query_prompt is not None else (
        instruction if instruction is not None else prompts[0])
    return EvalTask("holdout", "retrieval", data, "training data", {"query": query_prompt, "passage": prompts[1]})


@dataclass
class TrainingEval:
    """What the run evaluates and what it found; only rank 0 evaluates."""

    tasks: list[EvalTask]
    options: EvalOptions
    history: list[dict] = field(default_factory=list)  # {"step", "average", "scores"}
    start: dict | None = None
    best: dict | None = None

    @classmethod
    def create(cls, config: TrainConfig, prompts: tuple[str, str]) -> TrainingEval:
        tasks = load_tasks(list(config.eval), config.eval_max_per_task, config.seed) if config.eval else []
        if config.eval_holdout:
            held = holdout_task(config, prompts)
            if held is not None:
                tasks.append(held)
        # a BGE-M3 run scores retrieval by each head too (its start: the heads as initialised)
        options = EvalOptions(batch_size=config.eval_batch_size, seed=config.seed, progress=False, heads=config.heads,
                              head_weights=config.head_weights)
        return cls(tasks, options)

    @property
    def enabled(self) -> bool:
        return bool(self.tasks)

    def run(self, st, step: int, writer=None) -> dict:
        report = evaluate(st, self.tasks, self.options, name=f"step {step}")
        entry = {"step": step, "average": report.average,
                 "scores": {t.name: t.main_score for t in report.tasks}, "report": report.to_dict()}
        self.history.append(entry)
        if self.start is None:
            self.start = entry
        if writer is not None:
            writer.add_scalar("eval/average", report.average, step)
            for name, score in entry["scores"].items():
                writer.add_scalar(f"eval/{name}", score, step)
            for task in report.tasks:  # a BGE-M3 run's retrieval by each head (sparse_ndcg_at_10 ...)
                for head in ("sparse", "multivector", "hybrid"):
                    if f"{head}_{task.main_metric}" in task.metrics:
                        writer.add_scalar(f"eval/{task.name}/{head}", task.metrics[f"{head}_{task.main_metric}"],
                                          step)
        return entry

    def is_best(self, entry: dict) -> bool:
        if self.best is None or entry["average"] > self.best["average"]:
            self.best = entry
            return True
        return False

    def summary(self, final: dict | None = None) -> dict | None:
        """The start against ``final`` (default: the last evaluation; the best one for ``--keep-best``'s model)."""
        if not self.history or self.start is None:
            return None
        final = final or self.history[-1]
        rows = compare_reports(Report.from_dict(self.start["report"]), Report.from_dict(final["report"]))
        worse = [r["task"] for r in rows if r["task"] != "average" and r["delta"] < 0]
        return {"start": {k: v for k, v in self.start.items() if k != "report"},
                "final": {k: v for k, v in final.items() if k != "report"},
                "best_step": self.best["step"] if self.best else None, "rows": rows,
                "worse_than_start": final["average"] < self.start["average"], "tasks_worse": worse}

    def write(self, output_dir: str) -> None:
        path = Path(output_dir) / "eval.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"history": self.history, "summary": self.summary()}, indent=2,
                                   ensure_ascii=False), encoding="utf-8")

    def state(self) -> dict:
        return {"history": self.history, "start": self.start, "best": self.best}

    def restore(self, state: dict | None) -> None:
        if state:
            self.history, self.start, self.best = state["history"], state["start"], state["best"]
