"""Running tasks against a model: prompts as C-MTEB applies them, encoding with progress bars, exact search
over a corpus encoded in chunks, one :class:`Report` with every metric, and comparisons of two reports."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cmtp.schemas.errors import CmtpError
from cmtp.schemas.ranges import check_ranges, option
from cmtp.transforms.embedding import encode, load_embedding_model, resolve_prompts
from cmtp.transforms.embedding.engines import ENGINE_HELP, ENGINES
from cmtp.transforms.embedding.mcls import encode_mcls
from cmtp.transforms.embedding.prompts import BGE_ZH_INSTRUCTION

from .tasks import EvalTask


@dataclass
class EvalOptions:
    batch_size: int = option(64, "texts per forward pass", ge=1)
    max_seq_length: int | None = option(None, "tokens per text (default: the model's own limit)", ge=2)
    query_prompt: str | None = option(None, "prefix for queries and symmetric tasks (default: the task's, else the "
                                            "model's query prompt)")
    passage_prompt: str | None = option(None, "prefix for passages (default: the task's, else the model's)")
    instruction: bool | str = False  # retrieval/reranking queries: True = the task's or BGE's (the CLI's --instruction)
    corpus_chunk: int = option(50_000, "passages encoded and searched at a time (bounded memory at any corpus "
                                       "size)", ge=1)
    top_k: int = option(100, "retrieval: documents ranked per query (BGE-M3: the candidates each head's re-ranking "
                             "takes from dense and sparse)", ge=1)
    heads: str = option("dense", "retrieval: also score with these BGE-M3 heads, each a column, with their hybrid "
                                 "(dense,sparse,multivector; the model folder holds sparse_linear.pt / "
                                 "colbert_linear.pt)")
    head_weights: str = option("1,0.3,1", "BGE-M3: the hybrid's weights of the dense, sparse and multi-vector "
                                          "scores")
    mcls: int = option(0, "texts longer than N tokens: a [CLS] before every N tokens, the mean of their states as "
                          "the dense vector (BGE-M3's MCLS for long texts; 0: off)", ge=0)
    seed: int = option(0, "seed of subsamples, classifiers and k-means")
    device: str | None = option(None, "cpu, cuda, ... (default: cuda when present)")
    engine: str = option("torch", ENGINE_HELP, choices=ENGINES)
    progress: bool = True  # the CLI's --quiet turns it off
    allow_network: bool = option(False, "may fetch a hub model", flag="--allow-network/--offline")

    def __post_init__(self):
        check_ranges(self)
        from ..m3 import parse_heads, parse_weights

        self.heads = ",".join(parse_heads(self.heads))
        parse_weights(self.head_weights)
        if self.mcls and self.heads != "dense":
            raise CmtpError("--mcls gives dense vectors; evaluate the BGE-M3 heads without it")


@dataclass
class TaskResult:
    name: str
    type: str
    main_metric: str
    main_score: float
    metrics: dict[str, float]
    size: int
    texts_encoded: int
    seconds: float
    prompts: dict[str, str] = field(default_factory=dict)
    skipped_rows: int = 0


@dataclass
class Report:
    model: str
    tasks: list[TaskResult]
    seconds: float = 0.0

    @property
    def average(self) -> float:
        return float(np.mean([t.main_score for t in self.tasks])) if self.tasks else float("nan")

    def by_name(self) -> dict[str, TaskResult]:
        return {t.name: t for t in self.tasks}

    def texts_per_second(self) -> float:
        return sum(t.texts_encoded for t in self.tasks) / max(sum(t.seconds for t in self.tasks), 1e-9)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "average": self.average, "seconds": round(self.seconds, 2),
                "texts_per_second": round(self.texts_per_second(), 1), "tasks": [asdict(t) for t in self.tasks]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        return cls(data["model"], [TaskResult(**t) for t in data["tasks"]], data.get("seconds", 0.0))


class TextEncoder:
    """Normalised float32 embeddings of texts with a prompt; each distinct text is encoded once per call
    (STS sets repeat sentences), sorted by length by sentence-transformers."""

    def __init__(self, model, options: EvalOptions, bar=None):
        self.model, self.options, self.bar = model, options, bar
        self.count = 0

    def __call__(self, texts: list[str], prompt: str) -> np.ndarray:
        unique, inverse = np.unique(np.array(texts, dtype=object), return_inverse=True)
        update = self.bar.update if self.bar is not None else None
        if self.options.mcls:  # slower than plain encoding: the bar moves per batch
            vectors = encode_mcls(self.model, list(unique), prompt, self.options.batch_size, self.options.mcls,
                                  max_length=self.options.max_seq_length, on_done=update)
        else:
            vectors = encode(self.model, list(unique), prompt, self.options.batch_size,
                             max_length=self.options.max_seq_length)
        self.count += len(unique)
        if update:  # the rest of the texts: all of them, or (MCLS) the repeats the batches did not count
            update(len(texts) - (len(unique) if self.options.mcls else 0))
        return vectors[inverse.reshape(-1)]


def resolve_task_prompts(model, task: EvalTask, options: EvalOptions) -> dict[str, str]:
    """C-MTEB's usage: retrieval and reranking put the query prompt (or an instruction) on queries and the
    passage prompt on passages; symmetric tasks (STS, pairs, classification, clustering) put the query prompt
    on every text, as e5 and BGE prescribe. Flags override the task's prompts, which override the model's."""
    query, passage = resolve_prompts(
        model, options.query_prompt if options.query_prompt is not None else task.prompts.get("query"),
        options.passage_prompt if options.passage_prompt is not None else task.prompts.get("passage"))
    if not task.kind.symmetric and options.instruction:
        query = options.instruction if isinstance(options.instruction, str) else \
            (task.instruction or BGE_ZH_INSTRUCTION)
    if task.kind.symmetric:
        # a model saved with a retrieval instruction as its query prompt keeps the prompt for symmetric tasks
        # under mteb's task-type names (STS, PairClassification, ...), as mteb reads them
        own = (getattr(model, "prompts", None) or {}).get(task.kind.mteb_name)
        if own is not None and options.query_prompt is None and task.prompts.get("query") is None:
            query = own
        return {"text": query}
    return {"query": query, "passage": passage}


def run_task(model, task: EvalTask, options: EvalOptions, bar=None) -> TaskResult:
    started = time.perf_counter()
    encode = TextEncoder(model, options, bar)
    prompts = resolve_task_prompts(model, task, options)
    values = task.kind.evaluate(task.data, encode, prompts, options)
    return TaskResult(task.name, task.type, task.main_metric, values[task.main_metric], values, task.size(),
                      encode.count, round(time.perf_counter() - started, 3), prompts, task.skipped_rows)


def load_eval_model(name: str, options: EvalOptions):
    """The model for evaluation: the registry's inference loading (cuda + fp16 when present), at its own length
    unless ``options.max_seq_length`` (passed with each encode call)."""
    model = load_embedding_model(name, options.device, allow_network=options.allow_network, engine=options.engine)
    if options.heads != "dense":  # BGE-M3: the sparse and multi-vector heads saved beside the weights
        from cmtp.schemas.errors import CmtpError
        from cmtp.transforms.embedding import resolve_model

        from ..m3 import M3Heads, has_heads
        from ..m3.retrieval import attach_heads

        folder = resolve_model(name, allow_network=options.allow_network).path
        if options.engine != "torch" or not has_heads(folder):
            raise CmtpError(f"--heads {options.heads}: {name} " + (
                f"runs on the {options.engine} engine; the heads need --engine torch" if options.engine != "torch"
                else "has no BGE-M3 heads (sparse_linear.pt and colbert_linear.pt beside its weights); evaluate it "
                     "with --heads dense, or train it with --heads dense,sparse,multivector"))
        heads, _ = M3Heads.for_model(folder, model[0].auto_model.config.hidden_size)
        attach_heads(model, heads.to(next(model.parameters()).device).to(next(model.parameters()).dtype))
    return model


def evaluate(model, tasks: list[EvalTask], options: EvalOptions | None = None, name: str | None = None) -> Report:
    """Evaluate ``model`` (a name for the registry, or a loaded SentenceTransformer, left as it was found) on
    ``tasks``."""
    options = options or EvalOptions()
    if isinstance(model, str):
        name, model = name or model, load_eval_model(model, options)
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    try:
        parts = str(name or "model").rstrip("/").split("/")  # which model, when a baseline follows
        label = parts[-2] if len(parts) > 1 and parts[-1] == "model" else parts[-1]  # .../stage3/model: stage3
        results = [_run_with_progress(model, task, options, label) for task in tasks]
    finally:
        model.train(was_training)
    return Report(name or "model", results, time.perf_counter() - started)


def compare_reports(base: Report, other: Report) -> list[dict[str, Any]]:
    """Rows of task, metric, base score, other score, delta (other - base), for the tasks both have, and the
    average of those."""
    theirs = other.by_name()
    rows = [{"task": t.name, "type": t.type, "metric": t.main_metric, "base": t.main_score,
             "other": theirs[t.name].main_score, "delta": theirs[t.name].main_score - t.main_score}
            for t in base.tasks if t.name in theirs]
    if rows:
        b, o = float(np.mean([r["base"] for r in rows])), float(np.mean([r["other"] for r in rows]))
        rows.append({"task": "average", "type": "", "metric": "", "base": b, "other": o, "delta": o - b})
    return rows


def evaluate_with_baseline(model, tasks: list[EvalTask], options: EvalOptions,
                           baseline=None) -> tuple[Report, Report | None, dict[str, Any]]:
    """The evaluation record ``cmtp eval`` and the build's eval stage both write: the model's results and, with
    a ``baseline``, the baseline's and rows whose delta is always model - baseline (positive = the model is
    better). Returns (model report, baseline report or None, record)."""
    if isinstance(baseline, str):  # a baseline that is not there is found now, not after the model's evaluation
        from cmtp.transforms.embedding import resolve_model

        resolve_model(baseline, allow_network=options.allow_network)
    report = evaluate(model, tasks, options)
    record: dict[str, Any] = {"results": report.to_dict()}
    if baseline is None:
        return report, None, record
    base = evaluate(baseline, tasks, options)
    record["compare"] = {"baseline": base.model, "results": base.to_dict(), "rows": compare_reports(base, report)}
    return report, base, record


def _run_with_progress(model, task: EvalTask, options: EvalOptions, label: str) -> TaskResult:
    """One task with a bar on stderr (texts encoded / total, rate, ETA) when it is a terminal; otherwise one
    line when the task is done. ``options.progress=False`` (evaluations during training) shows neither."""
    if not options.progress:
        return run_task(model, task, options)
    from cmtp.transforms.common.progress import bar

    with bar(f"eval {label} {task.name}", task.text_count(), "text") as progress:
        return run_task(model, task, options, progress)
