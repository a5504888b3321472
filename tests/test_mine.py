"""Hard-negative mining: exact and IVF search, each false-negative guard, the string-pos trap, output schema."""

import json
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest

from cmtp.pipelines.mine.run import run_mine
from cmtp.schemas import PAIR, TRAINING_EXAMPLE, Manifest, rows_to_table, validate_table
from cmtp.transforms.mine.config import MineConfig, MineRunOptions
from cmtp.transforms.mine.index import (
    SearchIndex,
    build_index,
    exact_sharded_search,
    flat_index,
    merge_topk,
    rerank_exact,
    tune_nprobe,
)
from cmtp.transforms.mine.inputs import read_labeled
from cmtp.transforms.mine.pool_store import PoolStore
from cmtp.transforms.mine.sampling import choose_negatives, rng_for
from tests.numerics import assert_float32_close
from tests.test_reliability import assert_every_listed_output_opens


def _store(tmp_path, vectors, texts=None, clusters=None, shard_rows=1000):
    texts = texts or [f"文本编号{i}" for i in range(len(vectors))]
    store = PoolStore(tmp_path / "pool")
    store.write_texts(zip(texts, clusters or [None] * len(texts), strict=True))
    lookup = {t: v for t, v in zip(texts, vectors, strict=True)}
    store.write_embeddings(lambda batch: np.stack([lookup[t] for t in batch]), shard_rows)
    return store


def _unit(rng, n, d):
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_exact_search_is_brute_force(tmp_path):
    rng = np.random.default_rng(0)
    pool, queries = _unit(rng, 2500, 16), _unit(rng, 40, 16)
    store = _store(tmp_path, pool, shard_rows=700)
    assert len(store.shards) == 4
    stored = pool.astype(np.float16).astype(np.float32)  # embeddings are kept on disk in float16
    sims = queries @ stored.T
    truth = np.argsort(-sims, axis=1, kind="stable")[:, :25]
    index = build_index(store, MineConfig(flat_max=10_000, use_gpu=False))
    assert index.kind == "flat"
    for scores, found in [index.search(queries, 25), exact_sharded_search(store, queries, 25)]:
        assert_float32_close(scores, np.take_along_axis(sims, truth, axis=1), 16, what="scores")  # 16-wide dots
        # ids agree wherever the brute-force scores are not tied within float error
        gaps = np.abs(np.diff(np.take_along_axis(sims, truth, axis=1), axis=1))
        clear = np.concatenate([gaps[:, :1], np.minimum(gaps[:, 1:], gaps[:, :-1]), gaps[:, -1:]], axis=1) > 1e-5
        assert (found[clear] == truth[clear]).all() and clear.mean() > 0.95


def test_flat_index_filled_in_place_is_the_index_add_builds(tmp_path):
    """The exact index sized once and filled shard by shard holds the same bytes as one grown by add() per shard
    (so its searches and saved file are the same)."""
    import faiss

    rng = np.random.default_rng(3)
    store = _store(tmp_path, _unit(rng, 1300, 8), shard_rows=300)  # the last shard is shorter
    grown = faiss.IndexFlatIP(8)
    for shard in range(len(store.shards)):
        grown.add(np.ascontiguousarray(store.shard(shard), dtype=np.float32))
    filled = flat_index(store, 8)
    assert filled.ntotal == grown.ntotal == 1300
    assert faiss.serialize_index(filled).tobytes() == faiss.serialize_index(grown).tobytes()


def test_exact_rerank_orders_candidates_by_stored_vectors(tmp_path):
    rng = np.random.default_rng(5)
    pool, queries = _unit(rng, 900, 12), _unit(rng, 70, 12)
    store = _store(tmp_path, pool, shard_rows=250)
    stored = pool.astype(np.float16).astype(np.float32)
    candidates = np.stack([rng.choice(900, 30, replace=False) for _ in range(70)])
    candidates[:, -3:] = -1  # fewer candidates than asked on every row
    scores, ids = rerank_exact(store, queries, candidates, 10, block=16)
    for q, cand, s, i in zip(queries, candidates, scores, ids, strict=True):
        cand = cand[cand >= 0]
        want = cand[np.argsort(-(stored[cand] @ q), kind="stable")[:10]]
        assert i.tolist() == want.tolist()
        assert_float32_close(s, stored[i] @ q, 12, what="re-ranked scores")  # 12-wide dots
    # more wanted than there are candidates: the rest is -1 / -inf
    s, i = rerank_exact(store, queries[:2], candidates[:2], 30)
    assert (i[:, 27:] == -1).all() and np.isneginf(s[:, 27:]).all()
    # the sharded exact searcher behind SearchIndex(None) is the same as a flat index
    flat = build_index(store, MineConfig(flat_max=10_000, use_gpu=False))
    sharded = SearchIndex(None, "exact_sharded", store=store)
    assert_float32_close(sharded.search(queries, 15)[0], flat.search(queries, 15)[0], 12, what="scores")
    assert sharded.describe()["ntotal"] == 900


def test_sharded_search_merging_as_it_goes_equals_one_merge_of_every_shard(tmp_path):
    """Each shard's top-k merged into the best so far gives what one merge of every shard's top-k gave, ties
    (repeated vectors, so equal scores) broken by the lower id alike, with k above a shard's size."""
    import faiss

    rng = np.random.default_rng(11)
    pool = _unit(rng, 700, 8)
    pool[350:420] = pool[:70]  # the same vectors in other shards: tied scores across shards
    store = _store(tmp_path, pool, shard_rows=40)
    queries = np.concatenate([_unit(rng, 30, 8), pool[:5].astype(np.float16).astype(np.float32)])
    k = 50
    scores, ids = [], []
    for shard, offset in zip(range(len(store.shards)), store.shard_offsets(), strict=True):
        index = faiss.IndexFlatIP(8)
        index.add(np.ascontiguousarray(store.shard(shard), dtype=np.float32))
        d, i = index.search(queries, min(k, index.ntotal))
        scores.append(d)
        ids.append(np.where(i >= 0, i + offset, -1))
    want_scores, want_ids = merge_topk(scores, ids, k)
    got_scores, got_ids = exact_sharded_search(store, queries, k)
    assert got_ids.tolist() == want_ids.tolist() and (got_scores == want_scores).all()
    assert got_ids.shape == (35, k)


def test_merge_topk_across_shards():
    s, i = merge_topk([np.array([[0.9, 0.1]]), np.array([[0.95, 0.2]])],
                      [np.array([[3, 4]]), np.array([[7, -1]])], 3)
    assert i.tolist() == [[7, 3, 4]] and s[0, 0] == pytest.approx(0.95)


def test_ivf_reaches_recall_099_with_the_tuned_nprobe(tmp_path):
    rng = np.random.default_rng(1)
    centres = _unit(rng, 64, 32)
    pool = centres[rng.integers(64, size=30_000)] + 0.35 * rng.normal(size=(30_000, 32)).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    queries = pool[rng.choice(30_000, 300, replace=False)] + 0.05 * rng.normal(size=(300, 32)).astype(np.float32)
    store = _store(tmp_path, pool.astype(np.float32), shard_rows=8192)
    config = MineConfig(flat_max=5_000, use_gpu=False, target_recall=0.99)
    index = build_index(store, config)
    assert index.kind.startswith("ivf") and index.nlist == round(4 * np.sqrt(30_000))
    tune_nprobe(index, store, queries[:150].astype(np.float32), 50, 0.99)
    assert index.measured_recall >= 0.99 and index.nprobe < index.nlist
    # the tuned nprobe generalises to queries it was not tuned on
    _, truth = exact_sharded_search(store, queries[150:].astype(np.float32), 50)
    _, found = index.search(queries[150:], 50)
    recall = np.mean([len(np.intersect1d(a, b)) / 50 for a, b in zip(found, truth, strict=True)])
    assert recall >= 0.98

    # IVF-PQ: 8 bytes per passage here, approximate distances; the exact re-rank from disk restores the ranking
    pq_index = build_index(store, MineConfig(flat_max=5_000, use_gpu=False, ivf_pq=True))
    assert pq_index.kind.endswith("_pq8") and pq_index.rerank == 8
    tune_nprobe(pq_index, store, queries[:150].astype(np.float32), 50, 0.99)
    scores, found = pq_index.search(queries[150:], 50)
    recall = np.mean([len(np.intersect1d(a, b)) / 50 for a, b in zip(found, truth, strict=True)])
    assert recall >= 0.97, recall
    stored = np.concatenate([store.shard(i) for i in range(len(store.shards))]).astype(np.float32)
    exact = np.einsum("kd,d->k", stored[found[0]], queries[150].astype(np.float32))
    assert_float32_close(scores[0], exact, 32, what="re-ranked scores")  # the scores the guards see are exact
    small = _store(tmp_path / "small", pool[:500].astype(np.float32))
    assert build_index(small, MineConfig(flat_max=100, use_gpu=False, ivf_pq=True)).kind == "flat"  # too few for PQ
    pq_index.rerank = 0
    _, approximate = pq_index.search(queries[150:], 50)
    plain = np.mean([len(np.intersect1d(a, b)) / 50 for a, b in zip(approximate, truth, strict=True)])
    assert recall > plain  # without the re-rank PQ loses neighbours


def test_each_guard_removes_what_it_should(tmp_path):
    positive = "长江是亚洲第一长河，发源于青藏高原的唐古拉山脉，干流流经十一个省级行政区，于崇明岛以东注入东海。"
    texts = [
        positive + "！",  # 0 the positive (up to punctuation: an exact duplicate)
        "长江有多长",  # 1 the query itself
        "长江流域的气候以亚热带季风气候为主，雨量充沛。",  # 2 same cluster as the positive
        "长江中下游平原是中国重要的粮食产区之一。",  # 3 scores too close to the positive
        "长江是亚洲第一长河，发源于青藏高原的唐古拉山脉，干流流经十一个省级行政区，于崇明岛以东注入黄海。",  # 4 near
        "黄河是中国第二长河，发源于青海省巴颜喀拉山脉。",  # 5 a real hard negative
        "珠江是中国南方最大的河流。",  # 6 a real hard negative
    ]
    clusters = [None, None, "c1", None, None, None, None]
    store = _store(tmp_path, _unit(np.random.default_rng(2), len(texts), 8), texts, clusters)
    guards = Counter()
    config = MineConfig(range_start=0, range_end=10, max_neg_ratio=0.95, near_dup_jaccard=0.8)
    ranked = np.arange(7)
    scores = np.array([0.99, 0.9, 0.7, 0.79, 0.6, 0.5, 0.4], dtype=np.float32)
    chosen = choose_negatives("e1", "长江有多长", [positive], [0.8], "c1", ranked, scores, store, config, 5, guards)
    assert [c.index for c in chosen] == [5, 6] and all(c.kind == "mined" for c in chosen)
    assert guards == Counter(is_positive=1, equals_query=1, same_cluster_as_positive=1, too_close_to_positive=1,
                             near_duplicate_of_positive=1)
    # the pool itself holds one copy of texts equal up to case, width and punctuation
    assert PoolStore(tmp_path / "p2").write_texts([(positive, None), (positive + "！", None), ("Ａ", None),
                                                   ("a", None)]) == 2


def test_range_and_seeded_sampling(tmp_path):
    texts = [f"候选段落第{i}号，内容各不相同。" + "甲乙丙丁戊己庚辛"[i % 8] * (i % 5) for i in range(50)]
    store = _store(tmp_path, _unit(np.random.default_rng(3), 50, 8), texts)
    config = MineConfig(range_start=10, range_end=30, seed=7, max_neg_ratio=10)
    ranked, scores = np.arange(50), np.linspace(0.9, 0.1, 50).astype(np.float32)
    a = choose_negatives("ex", "查询", ["正样本"], [0.9], None, ranked, scores, store, config, 5, Counter())
    b = choose_negatives("ex", "查询", ["正样本"], [0.9], None, ranked, scores, store, config, 5, Counter())
    assert [c.index for c in a] == [c.index for c in b] and all(10 <= c.index < 30 for c in a) and len(a) == 5
    assert rng_for("ex", 7).integers(1 << 30) != rng_for("ey", 7).integers(1 << 30)


def test_string_pos_is_one_positive(tmp_path):
    path = tmp_path / "labeled.jsonl"
    rows = [{"query": "什么是长江", "pos": "长江是亚洲第一长河。", "neg": "黄河是第二长河。"},
            {"query": "什么是黄河", "pos": ["黄河是第二长河。", "黄河流经九个省区。"]},
            {"query": "", "pos": "空查询"}, {"pos": ["没有查询"]}, {"query": "没有正样本"},
            {"query": "q", "pos": [1, 2]}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n{broken\n", encoding="utf-8")
    examples, dead = read_labeled(str(path), "retrieval")
    assert examples[0].pos == ["长江是亚洲第一长河。"] and examples[0].neg == ["黄河是第二长河。"]
    assert examples[1].pos == ["黄河是第二长河。", "黄河流经九个省区。"]
    assert sorted(d["reason"] for d in dead) == ["bad_labeled_row"] * 4 + ["malformed_json"]


def test_mine_end_to_end_output_validates(tmp_path, tiny_model_path):
    from pathlib import Path

    raw = Path(__file__).parent / "data" / "raw" / "lcsts" / "clge_train_head30.tsv"
    rows = []
    for i, line in enumerate(raw.read_text(encoding="utf-8").splitlines()):
        title, text = line.split("\t")
        rows.append({"pair_id": f"p{i:03d}", "source": "lcsts", "source_file": "f", "record_key": str(i),
                     "title": title, "passage": text, "meta": "{}"})
    (tmp_path / "in").mkdir()
    pq.write_table(rows_to_table(rows, PAIR), tmp_path / "in" / "pairs.parquet")
    labeled = tmp_path / "labeled.jsonl"
    labeled.write_text(json.dumps({"query": "林志颖公司", "pos": rows[0]["passage"], "neg": [rows[1]["passage"]]},
                                  ensure_ascii=False) + "\n", encoding="utf-8")
    config = MineConfig(model=str(tiny_model_path), range_start=2, range_end=20, negatives=5, max_neg_ratio=1.5,
                        labeled=[str(labeled)], train_instruction="为这个句子生成表示以用于检索相关文章：",
                        pad_random=True)
    manifest = run_mine(str(tmp_path / "in"), str(tmp_path / "out"), config,
                        run=MineRunOptions(num_shards=40, row_group_size=8))
    assert_every_listed_output_opens(tmp_path / "out")  # 31 rows in 40 shards: the empty ones are not written
    table = pq.read_table(tmp_path / "out" / "examples")
    validate_table(table, TRAINING_EXAMPLE)
    assert table.num_rows == 31 == Manifest.read(str(tmp_path / "out")).check().count_out
    data = table.to_pylist()
    assert all(len(r["neg"]) == 5 for r in data if r["source"] == "lcsts")
    assert all(r["instruction"].startswith("为这个句子") for r in data)
    lab = next(r for r in data if r["query"] == "林志颖公司")
    assert lab["neg_kinds"][0] == "labeled" and lab["neg"][0] == rows[1]["passage"] and len(lab["neg"]) == 5
    assert all(r["pos"][0] not in r["neg"] for r in data)
    assert pq.ParquetFile(next((tmp_path / "out" / "examples").glob("*.parquet"))).metadata.row_group(0).num_rows <= 8
    assert manifest.extra["index"]["kind"] == "flat" and "guards_removed" in manifest.extra


def test_the_false_negative_guard_is_measured_above_the_pools_baseline(tmp_path):
    """e5-like scores: random pairs near 0.8, the positive at 0.92. On raw cosines 0.95 x 0.92 = 0.874 would
    remove the genuine hard negative at 0.88; above the baseline only the 0.915 candidate is too close."""
    from cmtp.transforms.mine.sampling import false_negative_ceiling

    assert false_negative_ceiling(0.92, 0.0, 0.95) == pytest.approx(0.874)
    assert false_negative_ceiling(0.92, 0.8, 0.95) == pytest.approx(0.914)
    texts = ["黄河是中国第二长河。", "珠江是中国南方最大的河流。", "长江的支流有嘉陵江和汉江等。"]
    store = _store(tmp_path, _unit(np.random.default_rng(4), 3, 8), texts)
    config = MineConfig(range_start=0, range_end=3, max_neg_ratio=0.95)
    scores = np.array([0.915, 0.88, 0.85], dtype=np.float32)
    guards = Counter()
    chosen = choose_negatives("e", "长江有多长", ["长江全长六千三百公里。"], [0.92], None, np.arange(3), scores, store,
                              config, 3, guards, baseline=0.8)
    assert [c.index for c in chosen] == [1, 2] and guards["too_close_to_positive"] == 1
    raw = Counter()
    choose_negatives("e", "长江有多长", ["长江全长六千三百公里。"], [0.92], None, np.arange(3), scores, store,
                     config, 3, raw, baseline=0.0)
    assert raw["too_close_to_positive"] == 2


def test_labeled_negatives_and_other_answers_to_the_query_are_not_mined(tmp_path, tiny_model_path):
    answers = ["长江是亚洲第一长河，全长六千三百公里。", "黄河是中国第二长河，流经九个省区。",
               "珠江是中国南方最大的河流。", "淮河位于长江与黄河之间。"]
    rows = [{"query": f"问题{i}", "pos": answers[i], "neg": [answers[(i + 1) % 3]]} for i in range(3)]
    rows += [{"query": "问题0", "pos": answers[3]}]  # another answer to the first question
    path = tmp_path / "labeled.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    config = MineConfig(model=str(tiny_model_path), range_start=0, range_end=10, negatives=3, max_neg_ratio=10,
                        labeled=[str(path)])
    manifest = run_mine(None, str(tmp_path / "out"), config)
    data = pq.read_table(tmp_path / "out" / "examples").to_pylist()
    for r in data:
        assert len(r["neg"]) == len(set(r["neg"])), r  # no negative twice
        assert not set(r["neg"]) & set(r["pos"])
        if r["query"] == "问题0":  # neither answer to 问题0 is a negative of the other
            assert not {answers[0], answers[3]} & set(r["neg"]), r
    guards = manifest.extra["guards_removed"]
    from cmtp.transforms.mine.sampling import GUARDS

    assert list(guards) == list(GUARDS)  # every guard is reported, zeros included
    assert guards["labeled_negative"] == 3 and guards["positive_of_same_query"] == 2
    assert "score_baseline" in manifest.extra


def test_labeled_files_may_be_a_glob_and_a_missing_one_is_named(tmp_path, tiny_model_path):
    """--labeled 'qa/*.jsonl' (accepted by a build's input check) failed as a bare FileNotFoundError path."""
    from cmtp.schemas import CmtpError

    for i in range(2):
        rows = [{"query": f"问题{i}{j}", "pos": f"答案{i}{j}，长江黄河。", "neg": [f"别的{i}{j}"]} for j in range(3)]
        (tmp_path / f"qa{i}.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows),
                                              encoding="utf-8")
    config = MineConfig(model=str(tiny_model_path), range_start=0, range_end=10, negatives=1,
                        labeled=[str(tmp_path / "qa*.jsonl")])
    assert run_mine(None, str(tmp_path / "out"), config).count_out == 6
    with pytest.raises(CmtpError, match="no files match .*missing.jsonl"):
        run_mine(None, str(tmp_path / "out2"), MineConfig(labeled=[str(tmp_path / "missing.jsonl")]))


def test_an_ivf_attempt_that_falls_back_to_exact_search_is_recorded(tmp_path):
    from cmtp.transforms.mine.miner import Miner, SameQueryPositives

    rng = np.random.default_rng(6)
    pool = _unit(rng, 6000, 32)  # no cluster structure: IVF needs most of its lists
    store = _store(tmp_path, pool, shard_rows=4096)
    none_shared = SameQueryPositives(*np.zeros((2, 0), np.uint64))
    miner = Miner(MineConfig(flat_max=1000, use_gpu=False), None, store, none_shared)
    miner.prepare_search(_unit(rng, 200, 32), 50)
    described = miner.search.describe()
    assert described["kind"] == "flat" and described["fallback_from"]["kind"].startswith("ivf")
    tried = described["fallback_from"]
    assert tried["nprobe"] > tried["nlist"] // 4 and 0 < tried["measured_recall_at_k"] <= 1
    assert abs(miner.baseline) < 0.1  # random unit vectors: unrelated pairs score about 0


def test_same_query_positives_are_keys_of_the_queries_asked_twice():
    from cmtp.transforms.mine.miner import SameQueryPositives
    from cmtp.transforms.mine.pool_store import text_key

    keys = np.array([text_key(q) for q in ["问题一", "问题二", "问题一"]], dtype=np.uint64)
    groups = SameQueryPositives(keys, np.array([text_key(p) for p in ["甲", "乙", "丙"]], dtype=np.uint64))
    assert sorted(groups.of("问题一").tolist()) == sorted([text_key("甲"), text_key("丙")])
    assert groups.of("问题二").tolist() == [text_key("乙")] and groups.of("没有").tolist() == []


def test_pool_lookup_sorts_the_keys_once(tmp_path):
    store = _store(tmp_path, _unit(np.random.default_rng(8), 5, 4), [f"段落{i}" for i in range(5)])
    assert store.lookup(["段落3", "没有", "段落0"]).tolist() == [3, -1, 0]
    order = store._key_order
    assert store.lookup(["段落4"]).tolist() == [4] and store._key_order is order


def test_mine_reads_a_config_file_and_flags_override_it(tmp_path, tiny_model_path):
    import json as _json

    from typer.testing import CliRunner

    from cmtp.pipelines.app import app

    rows = [{"query": f"问题{i}", "pos": [f"第{i}个答案，内容各不相同{i * 7}"]} for i in range(12)]
    (tmp_path / "labeled.jsonl").write_text("\n".join(_json.dumps(r, ensure_ascii=False) for r in rows),
                                            encoding="utf-8")
    (tmp_path / "mine.yaml").write_text(f"model: {tiny_model_path}\nrange: 0-8\nnegatives: 2\nseed: 3\n",
                                        encoding="utf-8")
    result = CliRunner().invoke(app, ["mine", "--labeled", str(tmp_path / "labeled.jsonl"), "--out",
                                      str(tmp_path / "out"), "--config", str(tmp_path / "mine.yaml"),
                                      "--negatives", "3"])
    assert result.exit_code == 0, (result.output, result.exception)
    config = Manifest.read(str(tmp_path / "out")).config
    assert (config["range_start"], config["range_end"], config["negatives"], config["seed"]) == (0, 8, 3, 3)
    assert config["max_neg_ratio"] == MineConfig().max_neg_ratio  # untouched: MineConfig's default
    bad = CliRunner().invoke(app, ["mine", "--labeled", str(tmp_path / "labeled.jsonl"), "--out",
                                   str(tmp_path / "o2"), "--range", "9-3"])
    assert "--range must be START-END" in str(bad.exception)


def _lcsts_pairs(tmp_path, count=120):
    from pathlib import Path

    raw = Path(__file__).parent / "data" / "raw" / "lcsts" / "clge_train_head30.tsv"
    lines = raw.read_text(encoding="utf-8").splitlines()
    rows = []
    for i in range(count):  # the 30 real pairs, varied so that every pair is its own passage
        title, text = lines[i % len(lines)].split("\t")
        rows.append({"pair_id": f"p{i:04d}", "source": "lcsts", "source_file": "f", "record_key": str(i),
                     "title": f"{title}{i}", "passage": f"{text}（第{i}篇）", "meta": "{}"})
    (tmp_path / "in").mkdir()
    pq.write_table(rows_to_table(rows, PAIR), tmp_path / "in" / "pairs.parquet")
    return str(tmp_path / "in")


def _digest(directory) -> dict:
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob("*.parquet"))}


def test_the_output_is_the_same_for_any_workers_and_partitions(tmp_path, tiny_model_path):
    """Embedding in 2 worker processes and searching 3 partitions on them gives byte-identical shards to one
    process and one partition, and the tallies add up to the same manifest figures."""
    source = _lcsts_pairs(tmp_path)
    base = dict(model=str(tiny_model_path), range_start=2, range_end=40, negatives=4, pad_random=True,
                embed_shard_rows=25, search_batch=20)
    shards = dict(num_shards=2, row_group_size=16)
    one = run_mine(source, str(tmp_path / "one"), MineConfig(**base), run=MineRunOptions(**shards))
    many = run_mine(source, str(tmp_path / "many"), MineConfig(**base),
                    run=MineRunOptions(**shards, workers=2, search_partitions=3))
    assert _digest(tmp_path / "many" / "examples") == _digest(tmp_path / "one" / "examples") != {}
    assert many.extra["search_partitions"] == 3 and one.extra["search_partitions"] == 1
    for key in ("guards_removed", "random_padding", "rows_short_of_negatives", "score_baseline", "index"):
        assert many.extra[key] == one.extra[key], key
    assert many.count_out == one.count_out == 120 and not (tmp_path / "many" / "_work").exists()


def test_partitions_are_contiguous_and_cover_every_query_shard():
    from cmtp.pipelines.mine.partitions import partition_blocks

    assert partition_blocks(7, 3) == [[0, 1], [2, 3, 4], [5, 6]]
    assert partition_blocks(2, 5) == [[0], [1]] and partition_blocks(4, 1) == [[0, 1, 2, 3]]


def test_a_text_block_spans_arrow_record_batches(tmp_path):
    import pyarrow as pa

    from cmtp.transforms.embedding.blocks import TextBlock, blocks_of, read_block_texts

    schema = pa.schema([("text", pa.string())])
    with pa.OSFile(str(tmp_path / "t.arrow"), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for start in range(0, 10, 4):  # record batches of 4, 4, 2 rows
            writer.write_batch(pa.record_batch([pa.array([f"t{i}" for i in range(start, min(start + 4, 10))])],
                                               schema=schema))
    blocks = blocks_of(str(tmp_path / "t.arrow"), 10, 3, "passage", str(tmp_path), "float16")
    assert [(b.start, b.end) for b in blocks] == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert [read_block_texts(b) for b in blocks] == [["t0", "t1", "t2"], ["t3", "t4", "t5"], ["t6", "t7", "t8"],
                                                     ["t9"]]
    assert TextBlock("x", 12, 20, "query", "d").shard_path == "d/emb-000000000012.npy"


def test_a_failed_embedding_block_stops_mining_with_its_reason(tmp_path, tiny_model_path, monkeypatch):
    """A block whose inference raises is caught by the handler and written as an ``.error`` file; mining cannot
    search a pool with holes, so it stops with that reason and, run as a stage, leaves nothing: no examples, no
    work folder, no tmp folder."""
    from cmtp.pipelines.stages import STAGES, run_stage
    from cmtp.schemas import CmtpError
    from cmtp.transforms.embedding.blocks import TextEmbedder

    original = TextEmbedder.embed

    def flaky(self, texts, kind):
        if any("第7篇" in t for t in texts):
            raise RuntimeError("CUDA out of memory (simulated)")
        return original(self, texts, kind)

    monkeypatch.setattr(TextEmbedder, "embed", flaky)
    source = _lcsts_pairs(tmp_path, 40)
    with pytest.raises(CmtpError, match="1 embedding block.*rows 0-25 .*CUDA out of memory"):
        run_stage(STAGES["mine"], [source], str(tmp_path / "out"),
                  {"model": str(tiny_model_path), "range_start": 1, "range_end": 10, "embed_shard_rows": 25})
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.tmp").exists()
