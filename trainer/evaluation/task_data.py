"""Reading an evaluation task's rows into memory: the columns each task type looks for, sentence pairs, BEIR
folders, SQuAD-style JSON, query rows with positives and negatives, and labelled texts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .readers import EvalDataError, read_records, read_table_rows

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


def is_beir(path: Path) -> bool:
    return path.is_dir() and (path / "corpus.jsonl").exists() and (path / "queries.jsonl").exists() and (
        (path / "qrels.tsv").exists() or (path / "qrels" / "test.tsv").exists())


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


def read_pairs(spec: dict, path: Path, task_type: str) -> tuple[dict, int]:
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
    if len(set(values)) < 2:  # a correlation (sts) or an average precision (pair classification) is undefined: nan
        what = "gold score" if task_type == "sts" else "label"
        raise EvalDataError(f"{path}: every row has the {what} {values[0]:g}; the task needs at least two different "
                            f"{what}s")
    key = "score" if task_type == "sts" else "label"
    return {"sentence1": s1, "sentence2": s2, key: np.array(values, dtype=np.float64)}, skipped


def read_beir(path: Path) -> dict:
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
        if qid not in queries:  # it counted as a query that found nothing (nDCG@10 81.48 -> 76.95)
            raise EvalDataError(f"{qrels_path}:{number}: query-id {qid!r} is not in queries.jsonl")
        qrels.setdefault(qid, {})[did] = rel
    queries = {q: t for q, t in queries.items() if q in qrels}
    return {"corpus": corpus, "queries": queries, "qrels": qrels}


def read_squad(path: Path) -> dict:
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


def read_query_rows(spec: dict, path: Path, task_type: str) -> dict:
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
        usable = [s for s in samples if s[1] and s[2]]
        if not usable:  # MAP over no sample: nan
            raise EvalDataError(f"{path}: no row has both a positive and a negative; reranking needs both")
        return {"samples": usable}
    return retrieval_data(samples)


def check_retrieval(data: dict, path: Path) -> dict:
    """A retrieval task needs a query with a relevant document (an empty qrels or queries file was a ValueError in the
    search, or a KeyError for the missing nDCG)."""
    if not any(any(r > 0 for r in data["qrels"].get(q, {}).values()) for q in data["queries"]):
        raise EvalDataError(f"{path}: no query has a relevant document ({len(data['queries'])} queries, "
                            f"{sum(map(len, data['qrels'].values()))} relevance rows)")
    if not data["corpus"]:
        raise EvalDataError(f"{path}: the corpus is empty")
    return data


def retrieval_data(samples: list[tuple[str, list[str], list[str]]]) -> dict:
    """(query, positives, negatives) rows as a retrieval task: the corpus is every positive and negative, each
    text once; a query's positives are its relevant documents."""
    ids: dict[str, str] = {}
    for _, pos, neg in samples:
        for text in pos + neg:
            ids.setdefault(text, f"d{len(ids)}")
    return {"corpus": {d: t for t, d in ids.items()}, "queries": {f"q{i}": q for i, (q, _, _) in enumerate(samples)},
            "qrels": {f"q{i}": {ids[t]: 1 for t in pos} for i, (_, pos, _) in enumerate(samples)}}


def read_labelled_texts(spec: dict, path: Path, task_type: str, split: str | None = None) -> tuple[list, list]:
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
