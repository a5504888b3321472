"""The score stage: RunInference equals direct encode, threshold edges, prompts, dead letters, manifest."""

import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.ml.inference.base import PredictionResult

from pipelines.score import run_score
from schemas import PAIR, SCORED_PAIR, Manifest, rows_to_table, validate_table
from trainer.models import weights_fingerprint
from transforms.score.config import ScoreConfig
from transforms.score.ptransform import REJECTED, _ToScoredRowFn
from transforms.score.scoring import is_kept, resolve_prompts, score_pairs

PAIRS = [
    ("北京的天气", "今天北京天气晴朗，气温二十度，适合出门散步。"),
    ("股票市场下跌", "受外部消息影响，今天股票市场全面下跌，成交量放大。"),
    ("长江", "长江是亚洲第一长河，发源于青藏高原，注入东海。"),
    ("信用卡激活失败", "信用卡上门激活失败的主要原因是资料不足。"),
    ("空的正文", ""),
] + [(f"标题{i}", f"第{i}段正文内容，用来检查批量打分与直接编码一致。" * (1 + i % 4)) for i in range(40)]


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pairs")
    rows = [{"pair_id": f"p{i:03d}", "source": "a" if i % 2 else "b", "source_file": "f", "record_key": str(i),
             "title": t, "passage": p, "meta": "{}"} for i, (t, p) in enumerate(PAIRS)]
    pq.write_table(rows_to_table(rows, PAIR), d / "pairs.parquet")
    return d


def test_run_inference_scores_equal_direct_encode(pairs_dir, tiny_model_path, tmp_path):
    config = ScoreConfig(model=str(tiny_model_path), threshold=0.5, batch_size=8, inference_batch=16)
    run_score(str(pairs_dir), str(tmp_path), config)
    rows = pq.read_table(tmp_path / "kept").to_pylist() + pq.read_table(tmp_path / "rejected").to_pylist()
    validate_table(pq.read_table(tmp_path / "kept"), SCORED_PAIR)
    validate_table(pq.read_table(tmp_path / "rejected"), SCORED_PAIR)
    rows.sort(key=lambda r: r["pair_id"])
    assert len(rows) == len(PAIRS) - 1  # the empty passage went to the dead letters
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_model_path), device="cpu")
    model.max_seq_length = config.max_seq_length
    direct = score_pairs(model, [r["title"] for r in rows], [r["passage"] for r in rows], config)
    np.testing.assert_allclose([r["score"] for r in rows], direct, atol=1e-5)
    assert {r["scorer_hash"] for r in rows} == {weights_fingerprint(tiny_model_path)}
    assert all(r["kept"] == (r["score"] >= 0.5) for r in rows)
    m = Manifest.read(str(tmp_path)).check()
    assert m.dropped["unscorable"] == 1
    assert m.count_out + m.dropped.get("below_threshold", 0) + 1 == len(PAIRS)
    assert m.outputs["rejected"]["rows"] == m.dropped.get("below_threshold", 0)
    dead = pq.read_table(tmp_path / "dead_letters").to_pylist()
    assert [(d["reason"], d["item_id"]) for d in dead] == [("unscorable", "p004")]


def test_threshold_edge_cases():
    t = 0.43
    assert is_kept(0.43, t) and is_kept(np.float32(0.43), t)
    below = float(np.nextafter(np.float32(0.43), np.float32(0)))
    assert not is_kept(below, t)
    fn = _ToScoredRowFn("m", "h", t)
    example = {"pair_id": "x", "source": "s"}
    (kept,) = fn.process(PredictionResult(example, 0.43))
    assert kept["kept"] is True and kept["threshold"] == float(np.float32(0.43))
    (rejected,) = fn.process(PredictionResult(example, below))
    assert rejected.tag == REJECTED and rejected.value["kept"] is False


class _FakeModel:
    def __init__(self, prompts):
        self.prompts = prompts


def test_prompts_come_from_the_model_or_the_flags():
    e5 = _FakeModel({"query": "query: ", "passage": "passage: "})
    assert resolve_prompts(e5, ScoreConfig()) == ("query: ", "passage: ")
    assert resolve_prompts(_FakeModel({"query": "q: ", "document": "d: "}), ScoreConfig()) == ("q: ", "d: ")
    assert resolve_prompts(_FakeModel({}), ScoreConfig()) == ("", "")  # text2vec: no prompts
    assert resolve_prompts(e5, ScoreConfig(query_prompt="", passage_prompt="文档：")) == ("", "文档：")


def test_missing_model_is_a_clear_error(pairs_dir, tmp_path, monkeypatch):
    from schemas import CmtpError

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(CmtpError, match="not in the local Hugging Face cache"):
        run_score(str(pairs_dir), str(tmp_path / "o"), ScoreConfig())
