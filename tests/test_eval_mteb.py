"""``cmtp eval`` agrees with mteb: the same STS and retrieval tasks, from the same local data, run once through
mteb's own task and evaluator classes (``mteb.evaluate``, no download) and once through cmtp, give the same
scores within 1e-4."""

import json
from pathlib import Path

import pytest

mteb = pytest.importorskip("mteb")

EVAL = Path(__file__).resolve().parents[1] / "examples" / "eval"


def _meta(name, task_type, main):
    from mteb.abstasks.task_metadata import TaskMetadata

    return TaskMetadata(name=name, description="local test data", dataset={"path": f"local/{name}", "revision": "0"},
                        type=task_type, category="t2t", eval_splits=["test"], eval_langs=["cmn-Hans"],
                        main_score=main, reference=None, date=None, domains=None, task_subtypes=None, license=None,
                        annotations_creators=None, dialect=None, sample_creation=None, bibtex_citation="",
                        modalities=["text"])


@pytest.fixture(scope="module")
def local_sets(tmp_path_factory):
    """60 STS-B pairs and a 25-query CMRC2018 retrieval set with 80 passages, as cmtp task folders."""
    root = tmp_path_factory.mktemp("sets")
    # without pairs of one sentence twice: their cosine is 1 up to float rounding, which each side rounds its own
    # way (a dot product here, 1 - cosine distance in mteb), so those tied ranks come out in different orders
    sts_lines = [line for line in (EVAL / "stsb-zh" / "STS-B.valid.data").read_text(encoding="utf-8").splitlines()
                 if len(set(line.split("\t")[:2])) == 2][:60]
    (root / "sts").mkdir()
    (root / "sts" / "pairs.tsv").write_text("\n".join(sts_lines) + "\n", encoding="utf-8")
    (root / "sts" / "task.yaml").write_text("name: sts\ntype: sts\npath: pairs.tsv\n", encoding="utf-8")
    cmrc = EVAL / "cmrc2018-dev"
    qrels = [line.split("\t") for line in (cmrc / "qrels.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    qrels = qrels[::40][:25]
    wanted = {d for _, d, _ in qrels}
    corpus = [json.loads(line) for line in (cmrc / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    corpus = [c for c in corpus if c["_id"] in wanted] + [c for c in corpus if c["_id"] not in wanted][:60]
    queries = {q["_id"]: q for q in map(json.loads, (cmrc / "queries.jsonl").read_text(encoding="utf-8").splitlines())}
    ret = root / "ret"
    ret.mkdir()
    for c in corpus:
        c["text"] = c["text"][:120]  # short passages: the tiny model reads 128 tokens
    (ret / "corpus.jsonl").write_text("\n".join(json.dumps(c, ensure_ascii=False) for c in corpus), encoding="utf-8")
    (ret / "queries.jsonl").write_text("\n".join(json.dumps(queries[q], ensure_ascii=False) for q, _, _ in qrels),
                                       encoding="utf-8")
    (ret / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join("\t".join(r) for r in qrels),
                                   encoding="utf-8")
    texts = sts_lines + [c["text"] for c in corpus] + [queries[q]["text"] for q, _, _ in qrels]
    return root, texts


@pytest.fixture(scope="module")
def model(local_sets, tmp_path_factory):
    from sentence_transformers import SentenceTransformer

    from tests.tiny_models import build_tiny_model

    _, texts = local_sets  # every character in the vocabulary: no two texts collapse to the same tokens
    path = build_tiny_model(tmp_path_factory.mktemp("model"), texts, hidden=64, dropout=0.0)
    return SentenceTransformer(str(path), device="cpu")


def test_sts_and_retrieval_scores_equal_mtebs(local_sets, model):
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.sts import AbsTaskSTS

    from cmtp.trainer.evaluation import EvalOptions, evaluate, load_tasks

    root, _ = local_sets
    # one text per forward pass on both sides: batch composition moves embeddings by ~1e-7, enough to swap
    # near-tied cosines of a random model and move Spearman by 3e-4
    options = EvalOptions(progress=False, batch_size=1)
    ours = evaluate(model, load_tasks([str(root / "sts"), str(root / "ret")]), options).by_name()
    sts_rows = [line.split("\t") for line in (root / "sts" / "pairs.tsv").read_text(encoding="utf-8").splitlines()]

    class LocalSTS(AbsTaskSTS):
        metadata = _meta("LocalSTS", "STS", "cosine_spearman")
        min_score, max_score = 0, 5

        def load_data(self, **kwargs):
            self.dataset = {"default": {"test": Dataset.from_dict({
                "sentence1": [r[0] for r in sts_rows], "sentence2": [r[1] for r in sts_rows],
                "score": [float(r[2]) for r in sts_rows]})}}
            self.data_loaded = True

    corpus = [json.loads(line) for line in (root / "ret" / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    queries = [json.loads(line) for line in (root / "ret" / "queries.jsonl").read_text(encoding="utf-8").splitlines()]
    qrels = {}
    for line in (root / "ret" / "qrels.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        q, d, r = line.split("\t")
        qrels.setdefault(q, {})[d] = int(r)

    class LocalRetrieval(AbsTaskRetrieval):
        metadata = _meta("LocalRetrieval", "Retrieval", "ndcg_at_10")

        def load_data(self, **kwargs):
            self.dataset = {"default": {"test": {
                "corpus": Dataset.from_dict({"id": [c["_id"] for c in corpus], "text": [c["text"] for c in corpus],
                                             "title": ["" for _ in corpus]}),
                "queries": Dataset.from_dict({"id": [q["_id"] for q in queries], "text": [q["text"] for q in queries]}),
                "relevant_docs": qrels, "top_ranked": None}}}
            self.data_loaded = True

    results = mteb.evaluate(model, tasks=[LocalSTS(), LocalRetrieval()], cache=None, show_progress_bar=False,
                            encode_kwargs={"batch_size": 1})
    theirs = {r.task_name: r.scores["test"][0] for r in results.task_results}
    assert ours["sts"].main_score == pytest.approx(theirs["LocalSTS"]["cosine_spearman"], abs=1e-4)
    assert ours["sts"].metrics["cosine_pearson"] == pytest.approx(theirs["LocalSTS"]["cosine_pearson"], abs=1e-4)
    for metric in ["ndcg_at_10", "recall_at_10", "mrr_at_10", "ndcg_at_1", "recall_at_100"]:
        assert ours["ret"].metrics[metric] == pytest.approx(theirs["LocalRetrieval"][metric], abs=1e-4), metric
    assert 0.0 < ours["ret"].main_score < 1.0  # a random tiny model: the comparison is not trivial
