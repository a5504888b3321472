"""The score stage: RunInference equals direct encode, threshold edges, prompts, dead letters, manifest."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from cmtp.pipelines.score import run_score
from cmtp.schemas import PAIR, SCORED_PAIR, Manifest, rows_to_table, validate_table
from cmtp.transforms.embedding import resolve_prompts, weights_fingerprint
from cmtp.transforms.score.config import ScoreConfig
from cmtp.transforms.score.ptransform import threshold_rows
from cmtp.transforms.score.scoring import is_kept, score_pairs
from tests.numerics import assert_float32_close, rounding_excess

# the reductions chained behind a tiny-model score, summed: per layer a 16-wide head, softmax and weighted sum over
# up to 128 positions, 32- and 64-wide projections and two LayerNorms; two layers, then mean pooling over 128
# positions, the normalisation and the 32-wide cosine
TINY_MODEL_TERMS = 2 * (16 + 128 + 128 + 32 + 32 + 64 + 32 + 32) + 128 + 32 + 32

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
    assert_float32_close([r["score"] for r in rows], direct, TINY_MODEL_TERMS, what="scores")
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
    import pyarrow as pa

    kept, rejected = threshold_rows(pa.table({"pair_id": ["x", "y"], "score": pa.array([0.43, below], pa.float32())}),
                                    t)
    assert kept.to_pylist() == [{"pair_id": "x", "score": np.float32(0.43), "threshold": np.float32(0.43),
                                 "kept": True}]
    assert rejected.column("pair_id").to_pylist() == ["y"] and rejected.column("kept").to_pylist() == [False]


class _FakeModel:
    def __init__(self, prompts):
        self.prompts = prompts


def test_prompts_come_from_the_model_or_the_flags():
    e5 = _FakeModel({"query": "query: ", "passage": "passage: "})
    assert resolve_prompts(e5) == ("query: ", "passage: ")
    assert resolve_prompts(_FakeModel({"query": "q: ", "document": "d: "})) == ("q: ", "d: ")
    assert resolve_prompts(_FakeModel({})) == ("", "")  # text2vec: no prompts
    flags = ScoreConfig(query_prompt="", passage_prompt="文档：")
    assert resolve_prompts(e5, flags.query_prompt, flags.passage_prompt) == ("", "文档：")


def test_missing_model_is_a_clear_error(pairs_dir, tmp_path, monkeypatch):
    from cmtp.schemas import CmtpError

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(CmtpError, match="not in the local Hugging Face cache"):
        run_score(str(pairs_dir), str(tmp_path / "o"), ScoreConfig())


@pytest.fixture(scope="module")
def prompted_model(tmp_path_factory):
    from tests.tiny_models import build_tiny_model

    corpus = [t + p for t, p in PAIRS] + ["问答："]
    return build_tiny_model(tmp_path_factory.mktemp("prompted"), corpus, prompts={"query": "问：", "passage": "答："})


def test_the_models_prompts_are_used_with_the_default_shared_model(pairs_dir, prompted_model, tmp_path):
    """With model sharing on (the default) the handler holds a proxy; the prompts must still be applied."""
    from sentence_transformers import SentenceTransformer

    config = ScoreConfig(model=str(prompted_model), threshold=0.0, batch_size=8)
    assert config.share_model
    run_score(str(pairs_dir), str(tmp_path), config)
    rows = sorted(pq.read_table(tmp_path / "kept").to_pylist() + pq.read_table(tmp_path / "rejected").to_pylist(),
                  key=lambda r: r["pair_id"])
    model = SentenceTransformer(str(prompted_model), device="cpu")
    titles, passages = [r["title"] for r in rows], [r["passage"] for r in rows]
    with_prompts = score_pairs(model, titles, passages, config, ("问：", "答："))
    without = score_pairs(model, titles, passages, config, ("", ""))
    assert_float32_close([r["score"] for r in rows], with_prompts, TINY_MODEL_TERMS, what="scores")
    assert rounding_excess(without, with_prompts, TINY_MODEL_TERMS) > 10  # the same rule tells the two apart


def test_rethreshold_replays_a_cut_without_the_model_and_reconciles(pairs_dir, tiny_model_path, tmp_path):
    from cmtp.pipelines.score import run_rethreshold

    first = run_score(str(pairs_dir), str(tmp_path / "s"), ScoreConfig(model=str(tiny_model_path), threshold=0.5))
    scores = np.array([r["score"] for sub in ["kept", "rejected"]
                       for r in pq.read_table(tmp_path / "s" / sub).to_pylist()], dtype=np.float32)
    t = float(np.median(scores))
    m = run_rethreshold(str(tmp_path / "s"), str(tmp_path / "r"), t).check()
    kept = pq.read_table(tmp_path / "r" / "kept").to_pylist()
    assert m.count_in == first.count_in == len(PAIRS) and m.count_out == int((scores >= np.float32(t)).sum())
    assert m.dropped == {"below_threshold": len(scores) - m.count_out, "unscorable": 1}
    assert all(r["kept"] and r["threshold"] == float(np.float32(t)) and r["score"] >= r["threshold"] for r in kept)
    assert m.extra["replayed_from"]["threshold"] == 0.5 and m.extra["scorer"] == first.extra["scorer"]
    with pytest.raises(Exception, match="not a cmtp score output|is the output of"):
        run_rethreshold(str(pairs_dir), str(tmp_path / "x"), t)


def test_score_with_a_target_keep_rate(pairs_dir, tiny_model_path, tmp_path):
    m = run_score(str(pairs_dir), str(tmp_path), ScoreConfig(model=str(tiny_model_path)), target_keep_rate=0.75)
    m.check()
    scored = len(PAIRS) - 1
    assert 0.75 <= m.count_out / scored < 0.75 + 2 / scored
    assert m.extra["target_keep_rate"] == 0.75 and not (tmp_path / "_all_scores").exists()
    # each rate names the work it timed: the scoring run's, and the replay's at the chosen cut
    assert m.extra["pairs_scored_per_second"] > 0 and "pairs_replayed_per_second" in m.extra
    assert m.extra["seconds"] == pytest.approx(m.extra["scoring_seconds"] + m.extra["replay_seconds"], abs=0.02)


def test_a_batch_whose_inference_fails_goes_to_dead_letters(pairs_dir, tiny_model_path, tmp_path, monkeypatch):
    from cmtp.transforms.score import scoring

    real = scoring.PairScorer.embed

    def flaky(self, texts, kind):
        if any("长江" in t for t in texts):
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(self, texts, kind)

    monkeypatch.setattr(scoring.PairScorer, "embed", flaky)
    config = ScoreConfig(model=str(tiny_model_path), threshold=0.5, inference_batch=4, share_model=False)
    m = run_score(str(pairs_dir), str(tmp_path), config).check()
    dead = [d for d in pq.read_table(tmp_path / "dead_letters").to_pylist() if d["reason"] == "inference_error"]
    assert 1 <= len(dead) <= 4 and "p002" in {d["item_id"] for d in dead}
    assert all("CUDA out of memory" in d["detail"] for d in dead)
    assert m.dropped["inference_error"] == len(dead)
    assert m.count_out + m.dropped.get("below_threshold", 0) + len(dead) + 1 == len(PAIRS)


def test_the_local_runner_shows_progress(pairs_dir, tiny_model_path, tmp_path, capfd):
    run_score(str(pairs_dir), str(tmp_path), ScoreConfig(model=str(tiny_model_path), threshold=0.5))
    err = capfd.readouterr().err
    # not a terminal: no bar, one line per phase with its count and rate
    scorable = sum(1 for title, passage in PAIRS if title.strip() and passage.strip())  # the empty one is dead
    assert "score: load model: 1 model in " in err and f"score: score: {2 * scorable} texts in " in err
    assert "texts/s)" in err and f"score: write: {len(PAIRS)} rows in " in err and "\r" not in err


def test_inference_batches_are_cut_from_row_groups_and_every_pass_but_their_last_is_full(tiny_model_path, tmp_path,
                                                                                      monkeypatch):
    """500 pairs in row groups of 200 at inference batch 64 and batch size 16: each row group is cut into batches
    of 64 (the last 8), each side of a batch is embedded one forward pass at a time (counted for the progress bar),
    and only the last pass of a batch may be partial. No pair goes through a GroupByKey: the batches are slices of
    what each step read. Embedding pass by pass in length order gives the scores of one call per batch."""
    from cmtp.transforms.embedding.blocks import TextEmbedder

    usable = [(t, p) for t, p in PAIRS if t.strip() and p.strip()]
    rows = [{"pair_id": f"p{i:04d}", "source": "s", "source_file": "f", "record_key": str(i),
             "title": f"{usable[i % len(usable)][0]}{i}", "passage": usable[i % len(usable)][1], "meta": "{}"}
            for i in range(500)]
    (tmp_path / "in").mkdir()
    pq.write_table(rows_to_table(rows, PAIR), tmp_path / "in" / "pairs.parquet", row_group_size=200)
    sizes, real = [], TextEmbedder.embed

    def counted(self, texts, kind):
        if kind == "query":
            sizes.append(len(texts))
        return real(self, texts, kind)

    monkeypatch.setattr(TextEmbedder, "embed", counted)
    config = ScoreConfig(model=str(tiny_model_path), batch_size=16, inference_batch=64, share_model=False)
    run_score(str(tmp_path / "in"), str(tmp_path / "out"), config)
    # seven batches of 64 (4 full passes each), two of 8, one of 36 (two full passes and one of 4)
    assert sorted(sizes) == sorted([16] * 4 * 7 + [8, 8] + [16, 16, 4])
    scored = [r for sub in ("kept", "rejected") for r in pq.read_table(tmp_path / "out" / sub).to_pylist()]
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_model_path), device="cpu")
    model.max_seq_length = config.max_seq_length
    scored.sort(key=lambda r: r["pair_id"])
    direct = score_pairs(model, [r["title"] for r in scored], [r["passage"] for r in scored], config)
    assert_float32_close([r["score"] for r in scored], direct, TINY_MODEL_TERMS, what="scores")


@pytest.mark.parametrize("options, message", [
    ({"threshold": 0.5, "target_keep_rate": 0.5}, "--threshold and --target-keep-rate each set the cut: give one"),
    ({"target_keep_rate": 0.5, "rethreshold": 0.9}, "--target-keep-rate and --rethreshold each set the cut"),
    ({"threshold": 0.5, "rethreshold": 0.9}, "--threshold and --rethreshold each set the cut"),
])
def test_two_ways_of_setting_the_cut_are_refused(options, message):
    """--threshold 0.5 --target-keep-rate 0.5 cut at the keep rate's threshold (0.72 on the demo), silently."""
    from cmtp.pipelines.stages import STAGES, prepare
    from cmtp.schemas import CmtpError

    with pytest.raises(CmtpError, match=message):
        prepare(STAGES["score"], options)
