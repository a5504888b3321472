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
import yaml

from .readers import EvalDataError, is_hf_disk, read_records, read_table_rows

TASK_TYPES = ("sts", "pair_classification", "retrieval", "reranking", "classification", "clustering")
MAIN_METRIC = {"sts": "cosine_spearman", "pair_classification": "cosine_ap", "retrieval": "ndcg_at_10",
               "reranking": "map", "classification": "accuracy", "clustering": "v_measure"}
DEFAULT_COLUMNS = {
    "sts": {"sentence1": ("sentence1", 0), "sentence2": ("sentence2", 1), "score": ("score", "label", 2)},
    "pair_classification": {"sentence1": ("sentence1", 0), "sentence2": ("sentence2", 1),
                            "label": ("label", "labels", 2)},
    "reranking": {"query": ("query",), "positive": ("positive", "pos"), "negative": ("negative", "neg")},
    "retrieval": {"query": ("query",), "positive": ("positive", "pos"), "negative": ("negative", "neg")},
    "classification": {"text": ("text", "sentence", 0), "label": ("label", 1)},
    "clustering": {"text": ("text", "sentences", "sentence", 0), "label": ("label", "labels", 1)},
}
DEFAULT_POSITIVE = ("1", "entailment", "true", "yes", "similar")
DEFAULT_NEGATIVE = ("0", "contradiction", "false", "no", "dissimilar")


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
    def main_metric(self) -> str:
        return MAIN_METRIC[self.type]

    def text_count(self) -> int:
        """Texts the evaluation encodes (repeats included): the unit of its progress bar."""
        d = self.data
        if self.type == "retrieval":
            return len(d["queries"]) + len(d["corpus"])
        if self.type == "reranking":
            return sum(1 + len(s[1]) + len(s[2]) for s in d["samples"])
        if self.type == "classification":
            return len(d["train"][0]) + len(d["test"][0])
        if self.type == "clustering":
            return len(d["texts"])
        return 2 * len(d["sentence1"])

    def size(self) -> int:
        d = self.data
        if self.type == "retrieval":
            return len(d["queries"])
        if self.type == "reranking":
            return len(d["samples"])
        if self.type == "classification":
            return len(d["test"][0])
        if self.type == "clustering":
            return len(d["texts"])
        return len(d["sentence1"])


# -- descriptors ---------------------------------------------------------------------------------------------
def _is_beir(path: Path) -> bool:
    return path.is_dir() and (path / "corpus.jsonl").exists() and (path / "queries.jsonl").exists() and (
        (path / "qrels.tsv").exists() or (path / "qrels" / "test.tsv").exists())


def _descriptors_in_yaml(path: Path) -> list[dict]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise EvalDataError(f"{path}: not valid YAML ({exc})") from exc
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
        if _is_beir(p):
            return [{"name": p.name, "type": "retrieval", "path": str(p), "_base": p.parent, "_file": str(p)}]
        found = [d for sub in sorted(p.iterdir()) if sub.is_dir() and not sub.name.startswith((".", "_"))
                 for d in (discover(str(sub)) if (sub / "task.yaml").exists() or _is_beir(sub) else [])]
        if found:
            return found
        raise EvalDataError(f"{p}: no task.yaml, no BEIR layout (corpus.jsonl, queries.jsonl, qrels.tsv), and no "
                            "task folders inside")
    if p.exists():
        raise EvalDataError(f"{p}: a data file needs a descriptor: write a task.yaml beside it (name, type, path, "
                            "columns) and pass that")
    raise EvalDataError(f"{p}: no such file or folder")


# -- building tasks ------------------------------------------------------------------------------------------
def _column(record: Any, role: str, spec: dict, task_type: str, where: str):
    names = [spec["columns"][role]] if role in spec.get("columns", {}) else list(DEFAULT_COLUMNS[task_type][role])
    if isinstance(record, dict):
        for name in names:
            if name in record and record[name] is not None:
                return record[name]
    raise EvalDataError(f"{where}: no {role!r} column (looked for {', '.join(map(str, names))}); set columns: in "
                        "the task descriptor")


def _texts(value: Any, where: str, role: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise EvalDataError(f"{where}: {role} must be a string or a list of strings")


def _rows(spec: dict, path: Path, split: str | None = None):
    header = spec.get("header")
    if header is None:  # a TSV with named columns has a header
        header = any(isinstance(v, str) for v in spec.get("columns", {}).values())
    for number, record in read_records(path, header=bool(header), split=split):
        yield f"{path}:{number}", record


def _pairs(spec: dict, path: Path, task_type: str) -> tuple[dict, int]:
    s1, s2, values, skipped = [], [], [], 0
    positive = {str(v).lower() for v in spec.get("positive_labels", DEFAULT_POSITIVE)}
    negative = {str(v).lower() for v in spec.get("negative_labels", DEFAULT_NEGATIVE)}
    for where, record in _rows(spec, path):
        a = _column(record, "sentence1", spec, task_type, where)
        b = _column(record, "sentence2", spec, task_type, where)
        if task_type == "sts":
            raw = _column(record, "score", spec, task_type, where)
            try:
                value = float(raw)
            except (TypeError, ValueError) as exc:
                raise EvalDataError(f"{where}: score {raw!r} is not a number") from exc
        else:
            raw = str(_column(record, "label", spec, task_type, where)).strip().lower()
            if raw in positive:
                value = 1
            elif raw in negative:
                value = 0
            else:  # e.g. OCNLI's "-" (no gold label) or "neutral" when not listed
                skipped += 1
                continue
        s1.append(str(a))
        s2.append(str(b))
        values.append(value)
    if not values:
        raise EvalDataError(f"{path}: no usable rows")
    key = "score" if task_type == "sts" else "label"
    return {"sentence1": s1, "sentence2": s2, key: np.array(values, dtype=np.float64)}, skipped


def _beir(path: Path) -> dict:
    corpus, queries, qrels = {}, {}, {}
    for where, rec in read_records(path / "corpus.jsonl"):
        if not isinstance(rec, dict) or "_id" not in rec:
            raise EvalDataError(f"{path / 'corpus.jsonl'}:{where}: a corpus line needs _id and text")
        title, text = (rec.get("title") or "").strip(), rec.get("text") or ""
        corpus[str(rec["_id"])] = f"{title} {text}".strip() if title else text
    for where, rec in read_records(path / "queries.jsonl"):
        if not isinstance(rec, dict) or "_id" not in rec or "text" not in rec:
            raise EvalDataError(f"{path / 'queries.jsonl'}:{where}: a query line needs _id and text")
        queries[str(rec["_id"])] = rec["text"]
    qrels_path = path / "qrels.tsv" if (path / "qrels.tsv").exists() else path / "qrels" / "test.tsv"
    for number, row in read_table_rows(qrels_path, header=True):
        try:
            qid, did, rel = row[0], row[1], int(float(row[2]))
        except (KeyError, ValueError) as exc:
            raise EvalDataError(f"{qrels_path}:{number}: expected query-id, corpus-id, score") from exc
        if did not in corpus:
            raise EvalDataError(f"{qrels_path}:{number}: corpus-id {did!r} is not in corpus.jsonl")
        qrels.setdefault(qid, {})[did] = rel
    queries = {q: t for q, t in queries.items() if q in qrels}
    return {"corpus": corpus, "queries": queries, "qrels": qrels}


def _squad(path: Path) -> dict:
    """SQuAD / CMRC2018 JSON as retrieval: each paragraph is a document, each question's relevant one is its own."""
    corpus, queries, qrels = {}, {}, {}
    for _, root in read_records(path):
        for article in root.get("data", []) if isinstance(root, dict) else []:
            for p_index, paragraph in enumerate(article.get("paragraphs", [])):
                did = str(paragraph.get("id") or f"{article.get('id', article.get('title', 'a'))}_{p_index}")
                corpus[did] = paragraph["context"]
                for qa in paragraph.get("qas", []):
                    queries[str(qa["id"])] = qa["question"]
                    qrels[str(qa["id"])] = {did: 1}
    if not queries:
        raise EvalDataError(f"{path}: no SQuAD-style data/paragraphs/qas found")
    return {"corpus": corpus, "queries": queries, "qrels": qrels}


def _query_rows(spec: dict, path: Path, task_type: str) -> dict:
    samples = []
    for where, record in _rows(spec, path):
        query = _column(record, "query", spec, task_type, where)
        pos = _texts(_column(record, "positive", spec, task_type, where), where, "positive")
        try:
            neg = _texts(_column(record, "negative", spec, task_type, where), where, "negative")
        except EvalDataError:
            if task_type == "reranking":
                raise
            neg = []
        samples.append((str(query), pos, neg))
    if task_type == "reranking":
        return {"samples": [s for s in samples if s[1] and s[2]]}
    corpus: dict[str, str] = {}
    ids: dict[str, str] = {}
    for _, pos, neg in samples:  # the corpus: every positive and negative, each text once
        for text in pos + neg:
            if text not in ids:
                ids[text] = f"d{len(ids)}"
                corpus[ids[text]] = text
    queries = {f"q{i}": q for i, (q, _, _) in enumerate(samples)}
    qrels = {f"q{i}": {ids[t]: 1 for t in pos} for i, (_, pos, _) in enumerate(samples)}
    return {"corpus": corpus, "queries": queries, "qrels": qrels}


def _labelled_texts(spec: dict, path: Path, task_type: str, split: str | None = None) -> tuple[list, list]:
    texts, labels = [], []
    for where, record in _rows(spec, path, split):
        text = _column(record, "text", spec, task_type, where)
        label = _column(record, "label", spec, task_type, where)
        if isinstance(text, list) and isinstance(label, list):  # mteb clustering rows: lists of both
            texts += [str(t) for t in text]
            labels += [str(v) for v in label]
        else:
            texts.append(str(text))
            labels.append(str(label))
    return texts, labels


def build_task(spec: dict) -> EvalTask:
    where = spec.get("_file", "task")
    task_type = spec.get("type")
    if task_type not in TASK_TYPES:
        raise EvalDataError(f"{where}: type must be one of {', '.join(TASK_TYPES)}, not {task_type!r}")
    base = Path(spec.get("_base", "."))
    path = (base / spec["path"]).resolve() if spec.get("path") else None
    splits = {k: (base / v).resolve() for k, v in (spec.get("splits") or {}).items()}
    if path is None and not splits:
        raise EvalDataError(f"{where}: give path: (a file or folder) or splits: {{train: ..., test: ...}}")
    skipped = 0
    if task_type in ("sts", "pair_classification"):
        data, skipped = _pairs(spec, path or splits.get("test"), task_type)
    elif task_type == "retrieval":
        fmt = spec.get("format")
        target = path or splits["test"]
        if fmt == "beir" or _is_beir(target):
            data = _beir(target)
        elif fmt == "squad":
            data = _squad(target)
        else:
            data = _query_rows(spec, target, task_type)
    elif task_type == "reranking":
        data = _query_rows(spec, path or splits["test"], task_type)
    elif task_type == "classification":
        if splits:
            if "train" not in splits or "test" not in splits:
                raise EvalDataError(f"{where}: classification needs splits: {{train: ..., test: ...}}")
            data = {"train": _labelled_texts(spec, splits["train"], task_type),
                    "test": _labelled_texts(spec, splits["test"], task_type)}
        elif is_hf_disk(path):
            data = {"train": _labelled_texts(spec, path, task_type, "train"),
                    "test": _labelled_texts(spec, path, task_type, "test")}
        else:  # one file: a seeded half / half split within each label
            texts, labels = _labelled_texts(spec, path, task_type)
            rng = np.random.default_rng(int(spec.get("seed", 0)))
            train_idx, test_idx = [], []
            for label in sorted(set(labels)):
                idx = rng.permutation([i for i, v in enumerate(labels) if v == label])
                half = (len(idx) + 1) // 2
                train_idx += idx[:half].tolist()
                test_idx += idx[half:].tolist()
            pick = lambda idx: ([texts[i] for i in sorted(idx)], [labels[i] for i in sorted(idx)])  # noqa: E731
            data = {"train": pick(train_idx), "test": pick(test_idx)}
    else:
        texts, labels = _labelled_texts(spec, path or splits["test"], task_type)
        data = {"texts": texts, "labels": labels}
    name = spec.get("name") or (path.stem if path else Path(where).parent.name)
    return EvalTask(str(name), task_type, data, str(path or splits), dict(spec.get("prompts") or {}),
                    spec.get("instruction"), skipped)


def subsample(task: EvalTask, n: int | None, seed: int) -> EvalTask:
    """At most ``n`` items, seeded: rows (STS, pairs, reranking, clustering), test rows (classification), or
    queries (retrieval; the corpus keeps their relevant documents and a seeded sample of 10 x n others)."""
    if not n or task.size() <= n:
        return task
    rng = np.random.default_rng([seed, n])
    d = task.data
    if task.type in ("sts", "pair_classification"):
        keep = np.sort(rng.choice(task.size(), n, replace=False))
        data = {k: ([v[i] for i in keep] if isinstance(v, list) else v[keep]) for k, v in d.items()}
    elif task.type == "retrieval":
        qids = sorted(d["queries"])
        chosen = [qids[i] for i in np.sort(rng.choice(len(qids), n, replace=False))]
        needed = {doc for q in chosen for doc in d["qrels"][q]}
        others = sorted(set(d["corpus"]) - needed)
        extra = [others[i] for i in np.sort(rng.choice(len(others), min(len(others), 4 * n), replace=False))]
        data = {"queries": {q: d["queries"][q] for q in chosen}, "qrels": {q: d["qrels"][q] for q in chosen},
                "corpus": {doc: d["corpus"][doc] for doc in sorted(needed | set(extra))}}
    elif task.type == "reranking":
        keep = np.sort(rng.choice(task.size(), n, replace=False))
        data = {"samples": [d["samples"][i] for i in keep]}
    elif task.type == "classification":
        keep = np.sort(rng.choice(task.size(), n, replace=False))
        texts, labels = d["test"]
        data = {"train": d["train"], "test": ([texts[i] for i in keep], [labels[i] for i in keep])}
    else:
        keep = np.sort(rng.choice(task.size(), n, replace=False))
        data = {"texts": [d["texts"][i] for i in keep], "labels": [d["labels"][i] for i in keep]}
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
