"""The scores of each task type, computed the way mteb computes them (``tests/test_eval_mteb.py`` checks STS
and retrieval against mteb's own code on the same data):

* STS: Spearman correlation of the cosine similarity with the gold score (mteb ``cosine_spearman``).
* Pair classification: average precision of the cosine similarity for the positive label (``cosine_ap``; with
  normalised embeddings dot product and Euclidean distance rank the same), and the best accuracy over all
  thresholds.
* Retrieval: trec_eval's nDCG@k (linear gain, log2 discount), Recall@k, and MRR@k, each ranking ties by score
  then by document id descending, as pytrec_eval does.
* Reranking: mean average precision and MRR@10 over each query's candidates.
* Classification: accuracy of a logistic regression on the embeddings. Clustering: V-measure of k-means.
"""

from __future__ import annotations

import numpy as np


def spearman(predicted: np.ndarray, gold: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(predicted, gold)[0])


def pearson(predicted: np.ndarray, gold: np.ndarray) -> float:
    from scipy.stats import pearsonr

    return float(pearsonr(predicted, gold)[0])


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(labels, scores))


def best_accuracy(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(best accuracy, its threshold) over every cut "score >= t means positive"."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(bool)
    n, total_neg = len(s), int((~y).sum())
    # predicted positive: the first i items; correct = positives among them + negatives after them
    tp = np.concatenate([[0], np.cumsum(y)])
    fp = np.concatenate([[0], np.cumsum(~y)])
    correct = tp + (total_neg - fp)
    # a cut can only fall between distinct scores
    valid = np.concatenate([[True], np.append(s[1:] != s[:-1], True)])
    best = int(np.argmax(np.where(valid, correct, -1)))
    threshold = float(s[best - 1]) if best > 0 else float(s[0]) + 1e-6
    return float(correct[best] / n), threshold


def ranked(doc_ids: list[str], scores: np.ndarray) -> list[tuple[str, float]]:
    """Documents by score descending, ties by id descending (pytrec_eval's order)."""
    return sorted(zip(doc_ids, (float(x) for x in scores), strict=True), key=lambda d: (d[1], d[0]), reverse=True)


def retrieval_scores(run: dict[str, list[tuple[str, float]]], qrels: dict[str, dict[str, int]],
                     ks: tuple[int, ...] = (1, 3, 5, 10, 100)) -> dict[str, float]:
    """``run``: query id -> ranked (doc id, score); ``qrels``: query id -> doc id -> relevance. Averages over the
    queries that have a relevant document."""
    out: dict[str, list[float]] = {}
    for qid, rels in qrels.items():
        relevant = {d: r for d, r in rels.items() if r > 0}
        if not relevant:
            continue
        docs = [d for d, _ in run.get(qid, [])]
        ideal = sorted(relevant.values(), reverse=True)
        for k in ks:
            gains = np.array([relevant.get(d, 0) for d in docs[:k]], dtype=np.float64)
            discounts = 1.0 / np.log2(np.arange(2, len(gains) + 2))
            ideal_k = np.array(ideal[:k], dtype=np.float64)
            idcg = float((ideal_k / np.log2(np.arange(2, len(ideal_k) + 2))).sum())
            out.setdefault(f"ndcg_at_{k}", []).append(float((gains * discounts).sum()) / idcg if idcg else 0.0)
            out.setdefault(f"recall_at_{k}", []).append(sum(1 for d in docs[:k] if d in relevant) / len(relevant))
            rank = next((i for i, d in enumerate(docs[:k]) if d in relevant), None)
            out.setdefault(f"mrr_at_{k}", []).append(0.0 if rank is None else 1.0 / (rank + 1))
    return {name: float(np.mean(values)) for name, values in out.items()}


def reranking_scores(samples: list[tuple[np.ndarray, np.ndarray]], k: int = 10) -> dict[str, float]:
    """``samples``: (candidate scores, relevance 0/1) per query, each with at least one positive and one
    negative. MAP over all candidates, MRR@k."""
    aps, rrs = [], []
    for scores, labels in samples:
        aps.append(average_precision(scores, labels))
        order = np.argsort(-scores, kind="stable")[:k]
        hits = np.flatnonzero(labels[order] > 0)
        rrs.append(1.0 / (hits[0] + 1) if len(hits) else 0.0)
    return {"map": float(np.mean(aps)), f"mrr_at_{k}": float(np.mean(rrs))}


def classification_accuracy(train_x: np.ndarray, train_y: list, test_x: np.ndarray, test_y: list,
                            seed: int) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    model = LogisticRegression(max_iter=100, random_state=seed)
    model.fit(train_x, train_y)
    predicted = model.predict(test_x)
    return {"accuracy": float(accuracy_score(test_y, predicted)),
            "f1": float(f1_score(test_y, predicted, average="macro"))}


def clustering_v_measure(x: np.ndarray, labels: list, seed: int) -> dict[str, float]:
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.metrics import v_measure_score

    k = len(set(labels))
    assigned = MiniBatchKMeans(n_clusters=k, batch_size=500, n_init="auto", random_state=seed).fit_predict(x)
    return {"v_measure": float(v_measure_score(labels, assigned))}
