"""``cmtp eval``: every task type on small local sets (scores checked against a direct computation), the metric
functions on hand-made cases, readers of each format, one error line naming file and line, and the CLI."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cmtp.pipelines.app import app
from cmtp.trainer.evaluation import EvalOptions, evaluate, load_tasks
from cmtp.trainer.evaluation import metrics as m

SENTENCES = ["今天天气很好", "今天是晴天", "股票市场下跌", "股市今天大跌", "长江是亚洲第一长河", "黄河是中国第二长河",
             "我喜欢吃苹果", "苹果很好吃", "北京是中国的首都", "中国的首都是北京", "火车晚点了", "列车延误了"]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(rows) -> str:
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n"


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    pairs = [(SENTENCES[i], SENTENCES[i + 1], 4.5 - i * 0.3) for i in range(0, 11)]
    write(root / "sts" / "pairs.tsv", "\n".join(f"{a}\t{b}\t{s}" for a, b, s in pairs))
    write(root / "sts" / "task.yaml", "name: sts\ntype: sts\npath: pairs.tsv\n")
    labels = ["entailment", "contradiction", "neutral", "-"]
    write(root / "pairs" / "ocnli.json", jsonl([{"sentence1": a, "sentence2": b, "label": labels[i % 4]}
                                                 for i, (a, b, _) in enumerate(pairs)]))
    write(root / "pairs" / "task.yaml", "name: pairs\ntype: pair_classification\npath: ocnli.json\n"
          "positive_labels: [entailment]\nnegative_labels: [contradiction]\n")
    beir = root / "beir"
    write(beir / "corpus.jsonl", jsonl([{"_id": f"d{i}", "title": "", "text": s} for i, s in enumerate(SENTENCES)]))
    write(beir / "queries.jsonl", jsonl([{"_id": f"q{i}", "text": SENTENCES[i]} for i in range(0, 12, 2)]))
    write(beir / "qrels.tsv", "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i + 1}\t1\n" for i in range(0, 12, 2)))
    write(root / "rerank" / "rows.jsonl", jsonl([{"query": SENTENCES[i], "pos": [SENTENCES[i + 1]],
                                                  "neg": [SENTENCES[(i + 4) % 12], SENTENCES[(i + 6) % 12]]}
                                                 for i in range(0, 12, 2)]))
    write(root / "rerank" / "task.yaml", "name: rerank\ntype: reranking\npath: rows.jsonl\n")
    cls_rows = [{"text": s, "label": "weather" if i < 2 else "other"} for i, s in enumerate(SENTENCES)]
    (root / "cls").mkdir()
    pq.write_table(pa.Table.from_pylist(cls_rows), root / "cls" / "rows.parquet")
    write(root / "cls" / "task.yaml", "name: cls\ntype: classification\npath: rows.parquet\n")
    from datasets import Dataset

    Dataset.from_list([{"text": s, "label": i // 2} for i, s in enumerate(SENTENCES)]).save_to_disk(
        str(root / "clu" / "hf"))
    write(root / "clu" / "task.yaml", "name: clu\ntype: clustering\npath: hf\n")
    return root


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    from tests.tiny_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("m"), SENTENCES, dropout=0.0,
                            prompts={"query": "问：", "passage": "文："})


@pytest.fixture(scope="module")
def model(model_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_path), device="cpu")


def test_every_task_type_runs_and_scores_match_a_direct_computation(suite, model):
    from scipy.stats import spearmanr

    tasks = load_tasks([str(suite)])
    assert sorted(t.type for t in tasks) == sorted(["sts", "pair_classification", "retrieval", "reranking",
                                                    "classification", "clustering"])
    report = evaluate(model, tasks, EvalOptions(progress=False))
    got = report.by_name()
    assert set(got) == {"sts", "pairs", "beir", "rerank", "cls", "clu"}
    rows = [line.split("\t") for line in (suite / "sts" / "pairs.tsv").read_text(encoding="utf-8").splitlines()]
    a = model.encode([r[0] for r in rows], prompt="问：", normalize_embeddings=True)
    b = model.encode([r[1] for r in rows], prompt="问：", normalize_embeddings=True)
    assert got["sts"].main_score == pytest.approx(spearmanr((a * b).sum(1), [float(r[2]) for r in rows])[0], abs=1e-6)
    assert got["sts"].prompts == {"text": "问："}  # symmetric: the query prompt on both sides
    assert got["beir"].prompts == {"query": "问：", "passage": "文："}
    assert got["pairs"].skipped_rows == 5 and got["pairs"].size == 6  # neutral and "-" rows are not pairs
    for t in report.tasks:
        assert 0.0 <= t.main_score <= 1.0 or t.type == "sts", t
        assert t.main_metric in t.metrics and t.texts_encoded > 0
    assert report.average == pytest.approx(np.mean([t.main_score for t in report.tasks]))


def test_retrieval_over_a_chunked_corpus_equals_one_pass(suite, model):
    tasks = load_tasks([str(suite / "beir")])
    whole = evaluate(model, tasks, EvalOptions(progress=False)).tasks[0].metrics
    chunked = evaluate(model, tasks, EvalOptions(progress=False, corpus_chunk=5, top_k=7)).tasks[0].metrics
    for key in ["ndcg_at_10", "mrr_at_10", "recall_at_5", "ndcg_at_1"]:
        assert chunked[key] == pytest.approx(whole[key], abs=1e-9), key


def test_max_seq_length_cuts_each_call_and_leaves_the_model_as_it_was(suite, model, model_path):
    """``--max-seq-length`` goes with each encode call: the scores are those of the model cut at that length
    (the same texts through a model whose own limit is that length), and the shared model keeps its length."""
    from sentence_transformers import SentenceTransformer

    tasks = load_tasks([str(suite / "sts")])
    own = model.max_seq_length
    cut = evaluate(model, tasks, EvalOptions(progress=False, max_seq_length=5)).tasks[0]
    assert model.max_seq_length == own
    short = SentenceTransformer(str(model_path), device="cpu")
    short.max_seq_length = 5
    reference = evaluate(short, tasks, EvalOptions(progress=False)).tasks[0]
    full = evaluate(model, tasks, EvalOptions(progress=False)).tasks[0]
    assert cut.main_score == pytest.approx(reference.main_score, abs=1e-9)
    assert cut.main_score != pytest.approx(full.main_score, abs=1e-6)  # the cut changed what was encoded


def test_metrics_by_hand():
    run = {"q1": [("d3", 0.9), ("d1", 0.8), ("d2", 0.1)], "q2": [("d9", 0.5), ("d8", 0.4)]}
    qrels = {"q1": {"d1": 1, "d2": 1}, "q2": {"d7": 1}, "q3": {"dx": 0}}  # q3 has no relevant doc: not counted
    s = m.retrieval_scores(run, qrels, ks=(1, 3))
    ndcg_q1 = (1 / np.log2(3) + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    assert s["ndcg_at_3"] == pytest.approx(ndcg_q1 / 2) and s["ndcg_at_1"] == 0.0
    assert s["mrr_at_3"] == pytest.approx(0.5 / 2) and s["recall_at_3"] == pytest.approx(0.5)
    assert m.ranked(["a", "b", "c"], np.array([0.5, 0.5, 0.9])) == [("c", 0.9), ("b", 0.5), ("a", 0.5)]
    acc, threshold = m.best_accuracy(np.array([0.9, 0.8, 0.7, 0.2]), np.array([1, 0, 1, 0]))
    assert acc == 0.75 and threshold == pytest.approx(0.9)  # the first of two equally good cuts
    r = m.reranking_scores([(np.array([0.1, 0.9, 0.5]), np.array([1, 0, 0]))])
    assert r["map"] == pytest.approx(1 / 3) and r["mrr_at_10"] == pytest.approx(1 / 3)


def test_subsample_is_seeded_and_keeps_relevant_documents(suite):
    (a,) = load_tasks([str(suite / "beir")], max_per_task=2, seed=3)
    (b,) = load_tasks([str(suite / "beir")], max_per_task=2, seed=3)
    assert a.data["queries"] == b.data["queries"] and len(a.data["queries"]) == 2
    assert all(doc in a.data["corpus"] for rels in a.data["qrels"].values() for doc in rels)
    (sts,) = load_tasks([str(suite / "sts")], max_per_task=4)
    assert len(sts.data["sentence1"]) == 4


def _cli_error(*args):
    from tests.test_cli import cli_error

    return cli_error("eval", *args)


def test_bad_files_are_one_error_line_naming_file_and_line(tmp_path, model):
    model_dir = tmp_path / "model"
    model.save(str(model_dir))
    bad = write(tmp_path / "bad" / "rows.jsonl", jsonl([{"query": "q", "pos": ["p"], "neg": ["n"]}]) + "{oops\n")
    write(tmp_path / "bad" / "task.yaml", "name: bad\ntype: reranking\npath: rows.jsonl\n")
    assert f"{bad}:2: invalid JSON line" in _cli_error(model_dir, "--tasks", tmp_path / "bad")
    write(tmp_path / "score" / "p.tsv", "a\tb\t3\nc\td\thigh\n")
    write(tmp_path / "score" / "task.yaml", "name: s\ntype: sts\npath: p.tsv\n")
    assert "p.tsv:2: score 'high' is not a number" in _cli_error(model_dir, "--tasks", tmp_path / "score")
    beir = tmp_path / "beir"
    write(beir / "corpus.jsonl", jsonl([{"_id": "d1", "text": "x"}]))
    write(beir / "queries.jsonl", jsonl([{"_id": "q1", "text": "y"}]))
    write(beir / "qrels.tsv", "query-id\tcorpus-id\tscore\nq1\td9\t1\n")
    assert "qrels.tsv:2: corpus-id 'd9' is not in corpus.jsonl" in _cli_error(model_dir, "--tasks", beir)
    write(tmp_path / "plain.tsv", "a\tb\t1\n")
    assert "needs a descriptor" in _cli_error(model_dir, "--tasks", tmp_path / "plain.tsv")
    assert "type must be one of" in _cli_error(model_dir, "--tasks", write(tmp_path / "t.yaml", "type: x\npath: a\n"))
    # a misspelt key or a wrong shape was ignored (the defaults read other columns than the user meant)
    assert "unknown key 'colums'" in _cli_error(model_dir, "--tasks", write(
        tmp_path / "u.yaml", "type: sts\npath: p.tsv\ncolums: {score: 2}\n"))
    assert "columns must be a mapping, not [0, 1, 2]" in _cli_error(model_dir, "--tasks", write(
        tmp_path / "v.yaml", "type: sts\npath: p.tsv\ncolumns: [0, 1, 2]\n"))
    for prompts, shown in [("{query: 5}", "query: 5"), ("{querry: 'q: '}", "querry: 'q: '")]:  # 5: a TypeError
        assert f"prompts takes query: and passage: strings, not {shown}" in _cli_error(model_dir, "--tasks", write(
            tmp_path / "w.yaml", f"type: sts\npath: p.tsv\nprompts: {prompts}\n"))


@pytest.mark.parametrize("queries, qrels, fragment", [
    ([{"_id": "q1", "text": "y"}], "query-id\tcorpus-id\tscore\n", "no query has a relevant document"),
    ([], "query-id\tcorpus-id\tscore\nq1\td1\t1\n", "query-id 'q1' is not in queries.jsonl"),
    ([{"_id": "q1", "text": "y"}], "query-id\tcorpus-id\tscore\nq9\td1\t1\n", "query-id 'q9' is not in queries"),
    ([], "query-id\tcorpus-id\tscore\n", "no query has a relevant document"),
])
def test_a_retrieval_task_without_a_usable_query_is_one_error(tmp_path, model, queries, qrels, fragment):
    """A header-only qrels, an empty queries file or unknown query ids were a faiss ValueError (a KeyError for the
    missing nDCG when all were empty); an unknown query id beside known ones counted as a query scoring zero."""
    model_dir = tmp_path / "model"
    model.save(str(model_dir))
    beir = tmp_path / "beir"
    write(beir / "corpus.jsonl", jsonl([{"_id": "d1", "text": "x"}]))
    write(beir / "queries.jsonl", jsonl(queries))
    write(beir / "qrels.tsv", qrels)
    assert fragment in _cli_error(model_dir, "--tasks", beir)


def test_a_task_whose_metric_is_undefined_is_one_error_not_nan(tmp_path, model):
    """STS with every gold score equal, and reranking without any negative, printed nan and exited 0."""
    model_dir = tmp_path / "model"
    model.save(str(model_dir))
    write(tmp_path / "sts" / "p.tsv", "a\tb\t3\nc\td\t3\n")
    write(tmp_path / "sts" / "task.yaml", "name: s\ntype: sts\npath: p.tsv\n")
    assert "every row has the gold score 3" in _cli_error(model_dir, "--tasks", tmp_path / "sts")
    write(tmp_path / "rr" / "rows.jsonl", jsonl([{"query": "q", "pos": ["p"], "neg": []}]))
    write(tmp_path / "rr" / "task.yaml", "name: r\ntype: reranking\npath: rows.jsonl\n")
    assert "no row has both a positive and a negative" in _cli_error(model_dir, "--tasks", tmp_path / "rr")


def test_cli_table_json_markdown_and_compare(suite, model, tmp_path):
    model_dir = tmp_path / "model"
    model.save(str(model_dir))
    runner = CliRunner()
    result = runner.invoke(app, ["eval", str(model_dir), "--tasks", str(suite / "sts"), "--tasks",
                                 str(suite / "beir"), "--quiet", "--format", "json", "--output",
                                 str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {t["name"] for t in data["results"]["tasks"]} == {"sts", "beir"}
    assert json.loads((tmp_path / "r.json").read_text(encoding="utf-8")) == data
    result = runner.invoke(app, ["eval", str(model_dir), "--tasks", str(suite / "sts"), "--compare",
                                 str(model_dir), "--quiet", "--format", "markdown"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("| task | metric |") and lines[2].startswith("| sts | cosine_spearman |")
    assert lines[-1].startswith("| average |") and lines[-1].endswith("+0.00 |")
    result = runner.invoke(app, ["eval", str(model_dir), "--tasks", str(suite), "--quiet"], terminal_width=200)
    assert result.exit_code == 0 and "average" in result.output and "v_measure" in result.output


def test_the_bundled_dev_suite_loads():
    tasks = load_tasks([str(Path(__file__).resolve().parents[1] / "examples" / "eval")], max_per_task=20)
    assert {t.type for t in tasks} == {"sts", "retrieval", "reranking"} and all(t.size() == 20 for t in tasks)


def test_eval_reads_its_options_from_a_config_file(suite, model, tmp_path):
    import yaml

    model_dir = tmp_path / "model"
    model.save(str(model_dir))
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump({"tasks": [str(suite / "sts")], "max_per_task": 5,
                                                        "batch_size": 2, "instruction": "bge"}), encoding="utf-8")
    result = CliRunner().invoke(app, ["eval", str(model_dir), "--config", str(tmp_path / "eval.yaml"), "--quiet",
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    tasks = json.loads(result.output)["results"]["tasks"]
    assert [(t["name"], t["size"]) for t in tasks] == [("sts", 5)]
    (tmp_path / "bad.yaml").write_text("suite: dev\ncolour: red\n", encoding="utf-8")
    bad = CliRunner().invoke(app, ["eval", str(model_dir), "--config", str(tmp_path / "bad.yaml")])
    assert "unknown eval option(s): colour" in str(bad.exception)


def test_a_missing_baseline_is_found_before_the_model_is_evaluated(monkeypatch):
    """``--compare`` naming no model fails at once, not after the model's whole evaluation."""
    from cmtp.schemas import CmtpError
    from cmtp.trainer.evaluation import runner

    def evaluated(*args, **kwargs):
        raise AssertionError("the model was evaluated before the baseline was checked")

    monkeypatch.setattr(runner, "evaluate", evaluated)
    with pytest.raises(CmtpError, match="no such model folder: /no/such/baseline"):
        runner.evaluate_with_baseline("builtin:me5-small", [], EvalOptions(progress=False), "/no/such/baseline")
