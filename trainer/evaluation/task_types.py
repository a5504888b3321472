"""The six evaluation task types, one small class each, registered by name in ``TASK_TYPES`` (as the extract
adapters are): how a type reads its data, counts it, subsamples it, and evaluates an encoder on it.

``encode(texts, prompt)`` (``runner.TextEncoder``) gives normalised vectors; ``prompts`` are the ones
``runner.resolve_task_prompts`` chose: ``text`` for symmetric types, ``query`` / ``passage`` for the others.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import metrics
from .readers import EvalDataError, is_hf_disk
from .task_data import (
    check_retrieval,
    is_beir,
    read_beir,
    read_labelled_texts,
    read_pairs,
    read_query_rows,
    read_squad,
)


def _rows_kept(rng, size: int, n: int) -> np.ndarray:
    return np.sort(rng.choice(size, n, replace=False))


class TaskType:
    """A task type: ``load(spec, path, splits, where)`` -> (data, rows skipped); ``size(data)``, the items the main
    metric averages over; ``text_count(data)``, the texts encoded (the progress bar's unit); ``subsample(data, n,
    rng)``; ``evaluate(data, encode, prompts, options)`` -> metrics."""

    name: str
    main_metric: str
    mteb_name: str  # the name mteb keys a model's prompts by
    symmetric = True  # one prompt (the query prompt) on every text, as e5 and BGE prescribe for these tasks


class SentencePairs(TaskType):
    """``sentence1``, ``sentence2`` and a ``score`` (sts) or 0/1 ``label`` (pair classification)."""

    def load(self, spec, path, splits, where):
        return read_pairs(spec, path or splits.get("test"), self.name)

    def size(self, data):
        return len(data["sentence1"])

    def text_count(self, data):
        return 2 * len(data["sentence1"])

    def subsample(self, data, n, rng):
        keep = _rows_kept(rng, self.size(data), n)
        return {k: ([v[i] for i in keep] if isinstance(v, list) else v[keep]) for k, v in data.items()}

    def cosines(self, data, encode, prompts) -> np.ndarray:
        a, b = encode(data["sentence1"], prompts["text"]), encode(data["sentence2"], prompts["text"])
        return np.einsum("ij,ij->i", a, b).astype(np.float64)


class Sts(SentencePairs):
    name, main_metric, mteb_name = "sts", "cosine_spearman", "STS"

    def evaluate(self, data, encode, prompts, options):
        cosine = self.cosines(data, encode, prompts)
        return {"cosine_spearman": metrics.spearman(cosine, data["score"]),
                "cosine_pearson": metrics.pearson(cosine, data["score"])}


class PairClassification(SentencePairs):
    name, main_metric, mteb_name = "pair_classification", "cosine_ap", "PairClassification"

    def evaluate(self, data, encode, prompts, options):
        cosine = self.cosines(data, encode, prompts)
        accuracy, threshold = metrics.best_accuracy(cosine, data["label"])
        return {"cosine_ap": metrics.average_precision(cosine, data["label"]), "cosine_accuracy": accuracy,
                "cosine_accuracy_threshold": threshold}


class Retrieval(TaskType):
    """``corpus`` {id: text}, ``queries`` {id: text}, ``qrels`` {query id: {doc id: relevance}}."""

    name, main_metric, mteb_name, symmetric = "retrieval", "ndcg_at_10", "Retrieval", False

    def load(self, spec, path, splits, where):
        target = path or splits["test"]
        if spec.get("format") == "beir" or is_beir(target):
            data = read_beir(target)
        elif spec.get("format") == "squad":
            data = read_squad(target)
        else:
            data = read_query_rows(spec, target, self.name)
        return check_retrieval(data, target), 0

    def size(self, data):
        return len(data["queries"])

    def text_count(self, data):
        return len(data["queries"]) + len(data["corpus"])

    def subsample(self, data, n, rng):
        """``n`` queries; the corpus keeps their relevant documents and a seeded sample of 4 x n others."""
        qids = sorted(data["queries"])
        chosen = [qids[i] for i in _rows_kept(rng, len(qids), n)]
        needed = {doc for q in chosen for doc in data["qrels"][q]}
        others = sorted(set(data["corpus"]) - needed)
        extra = [others[i] for i in np.sort(rng.choice(len(others), min(len(others), 4 * n), replace=False))]
        return {"queries": {q: data["queries"][q] for q in chosen}, "qrels": {q: data["qrels"][q] for q in chosen},
                "corpus": {doc: data["corpus"][doc] for doc in sorted(needed | set(extra))}}

    def evaluate(self, data, encode, prompts, options):
        if getattr(options, "heads", "dense") != "dense":  # BGE-M3: each head, and their hybrid
            from ..m3.retrieval import m3_retrieval

            encode.count += len(data["queries"]) + len(data["corpus"])
            return m3_retrieval(encode.model, data, prompts, options, encode.bar)
        qids = list(data["queries"])
        q = encode([data["queries"][i] for i in qids], prompts["query"])
        scores, index, doc_ids = search(encode, q, data["corpus"], prompts["passage"], options.top_k,
                                        options.corpus_chunk)
        run = {qid: metrics.ranked([doc_ids[j] for j in row[row >= 0]], s[row >= 0])
               for qid, s, row in zip(qids, scores, index, strict=True)}
        return metrics.retrieval_scores(run, data["qrels"])


class Reranking(TaskType):
    """``samples``: [(query, positives, negatives)]."""

    name, main_metric, mteb_name, symmetric = "reranking", "map", "Reranking", False

    def load(self, spec, path, splits, where):
        return read_query_rows(spec, path or splits["test"], self.name), 0

    def size(self, data):
        return len(data["samples"])

    def text_count(self, data):
        return sum(1 + len(s[1]) + len(s[2]) for s in data["samples"])

    def subsample(self, data, n, rng):
        return {"samples": [data["samples"][i] for i in _rows_kept(rng, self.size(data), n)]}

    def evaluate(self, data, encode, prompts, options):
        q = encode([s[0] for s in data["samples"]], prompts["query"])
        candidates = [s[1] + s[2] for s in data["samples"]]
        flat = encode([t for c in candidates for t in c], prompts["passage"])
        samples, offset = [], 0
        for row, (sample, cand) in enumerate(zip(data["samples"], candidates, strict=True)):
            scores = flat[offset : offset + len(cand)] @ q[row]
            offset += len(cand)
            samples.append((scores, np.array([1] * len(sample[1]) + [0] * len(sample[2]))))
        return metrics.reranking_scores(samples)


class Classification(TaskType):
    """``train`` and ``test``: (texts, labels); logistic regression on the embeddings."""

    name, main_metric, mteb_name = "classification", "accuracy", "Classification"

    def load(self, spec, path, splits, where):
        if splits:
            if "train" not in splits or "test" not in splits:
                raise EvalDataError(f"{where}: classification needs splits: {{train: ..., test: ...}}")
            return {split: read_labelled_texts(spec, splits[split], self.name) for split in ("train", "test")}, 0
        if is_hf_disk(path):
            return {split: read_labelled_texts(spec, path, self.name, split) for split in ("train", "test")}, 0
        # one file: a seeded half / half split within each label
        texts, labels = read_labelled_texts(spec, path, self.name)
        rng = np.random.default_rng(int(spec.get("seed", 0)))
        train_idx, test_idx = [], []
        for label in sorted(set(labels)):
            idx = rng.permutation([i for i, v in enumerate(labels) if v == label])
            half = (len(idx) + 1) // 2
            train_idx += idx[:half].tolist()
            test_idx += idx[half:].tolist()
        pick = lambda idx: ([texts[i] for i in sorted(idx)], [labels[i] for i in sorted(idx)])  # noqa: E731
        return {"train": pick(train_idx), "test": pick(test_idx)}, 0

    def size(self, data):
        return len(data["test"][0])

    def text_count(self, data):
        return len(data["train"][0]) + len(data["test"][0])

    def subsample(self, data, n, rng):
        keep = _rows_kept(rng, self.size(data), n)
        texts, labels = data["test"]
        return {"train": data["train"], "test": ([texts[i] for i in keep], [labels[i] for i in keep])}

    def evaluate(self, data, encode, prompts, options):
        train_x = encode(data["train"][0], prompts["text"])
        test_x = encode(data["test"][0], prompts["text"])
        return metrics.classification_accuracy(train_x, data["train"][1], test_x, data["test"][1], options.seed)


class Clustering(TaskType):
    """``texts`` and their ``labels``; k-means on the embeddings, scored by V-measure."""

    name, main_metric, mteb_name = "clustering", "v_measure", "Clustering"

    def load(self, spec, path, splits, where):
        texts, labels = read_labelled_texts(spec, path or splits["test"], self.name)
        return {"texts": texts, "labels": labels}, 0

    def size(self, data):
        return len(data["texts"])

    def text_count(self, data):
        return len(data["texts"])

    def subsample(self, data, n, rng):
        keep = _rows_kept(rng, self.size(data), n)
        return {"texts": [data["texts"][i] for i in keep], "labels": [data["labels"][i] for i in keep]}

    def evaluate(self, data, encode, prompts, options):
        return metrics.clustering_v_measure(encode(data["texts"], prompts["text"]), data["labels"], options.seed)


TASK_TYPES: dict[str, TaskType] = {
    t.name: t for t in (Sts(), PairClassification(), Retrieval(), Reranking(), Classification(), Clustering())
}


def search(encode, queries: np.ndarray, corpus: dict[str, str], prompt: str, k: int, chunk: int
           ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Exact inner-product top-k over the corpus, encoded and searched ``chunk`` passages at a time."""
    import faiss

    from cmtp.transforms.common.topk import merge_topk

    ids = list(corpus)
    k = min(k, len(ids))
    best_s, best_i = np.full((len(queries), 0), -np.inf, np.float32), np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(ids), chunk):
        block = ids[start : start + chunk]
        vectors = encode([corpus[d] for d in block], prompt)
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        s, i = index.search(np.ascontiguousarray(queries), min(k, len(block)))
        best_s, best_i = merge_topk([best_s, s], [best_i, np.where(i >= 0, i + start, -1)], k)
    return best_s, best_i, ids


def task_type(name: Any, where: str) -> TaskType:
    if name not in TASK_TYPES:
        raise EvalDataError(f"{where}: type must be one of {', '.join(TASK_TYPES)}, not {name!r}")
    return TASK_TYPES[name]
