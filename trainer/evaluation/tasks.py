"""Evaluation tasks: what a folder or a YAML descriptor holds, read into memory as one of six task types.

A task is described by a small YAML file (``task.yaml`` in its folder, or any ``*.yaml`` passed to
``--tasks``)::

    name: STS-B
    type: sts                 # sts | pair_classification | retrieval | reranking | classification | clustering
    path: STS-B.valid.data    # a file or folder, relative to the YAML; or `splits: {train: a.jsonl, test: b.jsonl}`
    columns: {sentence1: 0, sentence2: 1, score: 2}   # role -> column name (or index in a header-less TSV)
    header: false             # TSV/CSV: whether the first row names the columns
    positive_labels: [entailment]          # pair classification: raw labels meaning 1 ...
    negative_labels: [contradiction]       # ... and 0; rows with other labels are skipped
    prompts: {query: "query: ", passage: "passage: "}   # override the model's prompts for this task
    instruction: 为这个句子生成表示以用于检索相关文章：  # the BGE retrieval instruction, used with --instruction

A BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels.tsv`` or ``qrels/test.tsv``) is a retrieval task
without a descriptor; so is a SQuAD-style JSON file (``format: squad``: each question -> its paragraph). A
folder of such folders is a suite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cmtp.schemas.yaml_files import load_yaml

from .readers import EvalDataError
from .task_data import is_beir
from .task_types import TASK_TYPES, TaskType, task_type


@dataclass
class EvalTask:
    """One task in memory. ``data`` by type: sts / pair_classification: ``sentence1``, ``sentence2``, ``score`` /
    ``label``; retrieval: ``corpus`` {id: text}, ``queries`` {id: text}, ``qrels`` {qid: {doc id: relevance}};
    reranking: ``samples`` [(query, positives, negatives)]; classification: ``train`` / ``test`` (texts, labels);
    clustering: ``texts``, ``labels``."""

    name: str
    type: str
    data: dict[str, Any]
    source: str
    prompts: dict[str, str] = field(default_factory=dict)
    instruction: str | None = None
    skipped_rows: int = 0

    @property
    def kind(self) -> TaskType:
        return TASK_TYPES[self.type]

    @property
    def main_metric(self) -> str:
        return self.kind.main_metric

    def text_count(self) -> int:
        """Texts the evaluation encodes (repeats included): the unit of its progress bar."""
        return self.kind.text_count(self.data)

    def size(self) -> int:
        return self.kind.size(self.data)


# -- descriptors ---------------------------------------------------------------------------------------------
def _descriptors_in_yaml(path: Path) -> list[dict]:
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), str(path))
    except OSError as exc:
        raise EvalDataError(f"{path}: {exc.strerror or exc}") from exc
    items = data.get("tasks") if isinstance(data, dict) and "tasks" in data else data
    items = items if isinstance(items, list) else [items]
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise EvalDataError(f"{path}: task {i + 1} must be a mapping of option: value")
        out.append({**item, "_base": path.parent, "_file": str(path)})
    return out


def discover(path: str) -> list[dict]:
    """Task descriptors behind a ``--tasks`` argument: a YAML file, a task folder, or a folder of task folders."""
    p = Path(path).expanduser()
    if p.is_file() and p.suffix in (".yaml", ".yml"):
        return _descriptors_in_yaml(p)
    if p.is_dir():
        if (p / "task.yaml").exists():
            return _descriptors_in_yaml(p / "task.yaml")
        if is_beir(p):
            return [{"name": p.name, "type": "retrieval", "path": str(p), "_base": p.parent, "_file": str(p)}]
        found = [d for sub in sorted(p.iterdir()) if sub.is_dir() and not sub.name.startswith((".", "_"))
                 for d in (discover(str(sub)) if (sub / "task.yaml").exists() or is_beir(sub) else [])]
        if found:
            return found
        raise EvalDataError(f"{p}: no task.yaml, no BEIR layout (corpus.jsonl, queries.jsonl, qrels.tsv), and no "
                            "task folders inside")
    if p.exists():
        raise EvalDataError(f"{p}: a data file needs a descriptor: write a task.yaml beside it (name, type, path, "
                            "columns) and pass that")
    raise EvalDataError(f"{p}: no such file or folder")


# -- building tasks ------------------------------------------------------------------------------------------
DESCRIPTOR_KEYS = {"name": (str, int), "type": str, "path": str, "splits": dict, "columns": dict, "header": bool,
                   "format": str, "positive_labels": list, "negative_labels": list, "prompts": dict,
                   "instruction": str, "seed": int}
_SHAPES = {str: "a string", dict: "a mapping", bool: "true or false", list: "a list", int: "an integer"}


def _check_descriptor(spec: dict, where: str) -> None:
    """Known keys with values of their shape (a misspelt ``colums:`` or a list for ``columns:`` was ignored)."""
    for key, value in spec.items():
        if key.startswith("_") or value is None:
            continue
        if key not in DESCRIPTOR_KEYS:
            raise EvalDataError(f"{where}: unknown key {key!r}; a task descriptor has {', '.join(DESCRIPTOR_KEYS)}")
        shape = DESCRIPTOR_KEYS[key]
        if not isinstance(value, shape):
            raise EvalDataError(f"{where}: {key} must be {_SHAPES[shape if isinstance(shape, type) else str]}, "
                                f"not {value!r}")
    for role, prompt in (spec.get("prompts") or {}).items():  # a number was a TypeError inside the encoder
        if role not in ("query", "passage") or not isinstance(prompt, str):
            raise EvalDataError(f"{where}: prompts takes query: and passage: strings, not {role}: {prompt!r}")


def build_task(spec: dict) -> EvalTask:
    where = spec.get("_file", "task")
    _check_descriptor(spec, where)
    kind = task_type(spec.get("type"), where)
    base = Path(spec.get("_base", "."))
    path = (base / spec["path"]).resolve() if spec.get("path") else None
    splits = {k: (base / v).resolve() for k, v in (spec.get("splits") or {}).items()}
    if path is None and not splits:
        raise EvalDataError(f"{where}: give path: (a file or folder) or splits: {{train: ..., test: ...}}")
    data, skipped = kind.load(spec, path, splits, where)
    name = spec.get("name") or (path.stem if path else Path(where).parent.name)
    return EvalTask(str(name), kind.name, data, str(path or splits), dict(spec.get("prompts") or {}),
                    spec.get("instruction"), skipped)


def subsample(task: EvalTask, n: int | None, seed: int) -> EvalTask:
    """At most ``n`` items, seeded: rows (STS, pairs, reranking, clustering), test rows (classification), or
    queries (retrieval; the corpus keeps their relevant documents and a seeded sample of others)."""
    if not n or task.size() <= n:
        return task
    data = task.kind.subsample(task.data, n, np.random.default_rng([seed, n]))
    return EvalTask(task.name, task.type, data, task.source, task.prompts, task.instruction, task.skipped_rows)


SUITES = {"dev": Path(__file__).resolve().parents[2] / "examples" / "eval"}


def suite_path(name: str) -> str:
    """A named suite's folder: ``dev`` is the sets bundled in ``examples/eval`` of the source checkout."""
    if name not in SUITES:
        raise EvalDataError(f"unknown suite {name!r}; known: {', '.join(SUITES)} (or pass task folders)")
    if not SUITES[name].is_dir():
        raise EvalDataError(f"suite {name!r} ships with the source checkout ({SUITES[name]}); pass task folders")
    return str(SUITES[name])


def load_tasks(paths: list[str], max_per_task: int | None = None, seed: int = 0) -> list[EvalTask]:
    """Tasks behind each path (``suite:NAME`` names a suite), subsampled to ``max_per_task``."""
    paths = [suite_path(p.split(":", 1)[1]) if p.startswith("suite:") else p for p in paths]
    tasks = [subsample(build_task(spec), max_per_task, seed) for path in paths for spec in discover(path)]
    names = [t.name for t in tasks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise EvalDataError(f"two tasks are named {', '.join(duplicates)}: give them distinct name: fields")
    return tasks
