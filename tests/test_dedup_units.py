"""Dedup building blocks: shingles, signatures, band keys, connected components, representatives."""

import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to
from datasketch import MinHash

from cmtp.pipelines.beam_runner import make_pipeline
from cmtp.transforms.dedup.components import ConnectedComponents
from cmtp.transforms.dedup.config import DedupConfig
from cmtp.transforms.dedup.dofns import KeepRepresentativeFn, bucket_edges, size_bucket
from cmtp.transforms.dedup.lsh import band_keys, collision_probability, optimal_bands_rows
from cmtp.transforms.dedup.minhash import EMPTY, estimate_jaccard, signatures, text_signatures
from cmtp.transforms.dedup.shingles import char_shingles, jaccard, shingle_hashes, word_shingles

TEXT = "北京是中国的首都，也是全国的政治和文化中心。"


def test_char_shingles_of_chinese_ignore_punctuation_and_spaces():
    assert char_shingles("今天 天气，很好！", 5) == ["今天天气很", "天天气很好"]
    assert char_shingles(TEXT, 5)[0] == "北京是中国" and all(len(s) == 5 for s in char_shingles(TEXT))
    assert "," not in "".join(char_shingles(TEXT)) and "，" not in "".join(char_shingles(TEXT))


def test_mixed_and_full_width_text_is_normalised():
    assert char_shingles("ＡＢＣ abc 中文", 3) == char_shingles("abcabc中文", 3)
    assert char_shingles("Deep Learning 深度学习", 4)[0] == "deep"


def test_short_texts_shorter_than_n():
    assert char_shingles("你好", 5) == ["你好"]
    assert char_shingles("，。！", 5) == [] and len(shingle_hashes("，。！")) == 0
    assert len(shingle_hashes("你好")) == 1 and jaccard(shingle_hashes("你好"), shingle_hashes("你好!")) == 1.0
    assert jaccard(shingle_hashes("你好"), shingle_hashes("你好吗")) == 0.0


def test_word_shingles_use_jieba():
    shingles = word_shingles("我爱北京天安门", 2)
    assert shingles and all(len(s.split(" ")) == 2 for s in shingles)
    assert len(shingle_hashes("我爱北京天安门", 2, "word")) == len(set(shingles))


def test_shingle_hashes_are_the_shingle_set():
    assert len(shingle_hashes(TEXT * 2)) == len(set(char_shingles(TEXT * 2)))
    a, b = TEXT, TEXT.replace("政治", "经济")
    expected = len(set(char_shingles(a)) & set(char_shingles(b))) / len(set(char_shingles(a)) | set(char_shingles(b)))
    assert jaccard(shingle_hashes(a), shingle_hashes(b)) == pytest.approx(expected)


def test_batched_signatures_equal_per_document_ones():
    texts = [TEXT, "", "短", TEXT[::-1], "四个字啊", TEXT * 3]
    batched = text_signatures(texts)
    single = signatures([shingle_hashes(t) for t in texts])
    np.testing.assert_array_equal(batched, single)
    assert (batched[1] == EMPTY).all() and batched.dtype == np.uint32 and batched.shape == (6, 128)


def _edit(text, rng, fraction):
    chars = list(text)
    for _ in range(int(len(chars) * fraction)):
        chars[rng.integers(len(chars))] = chr(0x4E00 + int(rng.integers(20000)))
    return "".join(chars)


def test_jaccard_estimates_match_datasketch_within_sampling_error():
    rng = np.random.default_rng(7)
    base = ("长江是亚洲第一长河和世界第三长河，发源于青藏高原的唐古拉山脉，干流流经青海、西藏、四川、云南、重庆、湖北、"
            "湖南、江西、安徽、江苏和上海，于崇明岛以东注入东海，全长六千三百多千米。")
    ours, theirs, truth = [], [], []
    for i in range(200):
        a, b = _edit(base, rng, 0.02), _edit(base, rng, 0.02 + 0.08 * (i % 10) / 10)
        ha, hb = shingle_hashes(a), shingle_hashes(b)
        truth.append(jaccard(ha, hb))
        # a fresh seed per pair keeps the samples independent (one seed shares its hash functions everywhere)
        s = signatures([ha, hb], seed=i + 1)
        ours.append(estimate_jaccard(s[0], s[1]))
        m1, m2 = MinHash(num_perm=128, seed=i + 1), MinHash(num_perm=128, seed=i + 1)
        m1.update_batch([x.encode() for x in set(char_shingles(a))])
        m2.update_batch([x.encode() for x in set(char_shingles(b))])
        theirs.append(m1.jaccard(m2))
    ours, theirs, truth = map(np.array, (ours, theirs, truth))
    sigma = np.sqrt(truth * (1 - truth) / 128)
    # both estimators are unbiased with the same variance: mean errors ~0, spread ~sigma, and close to each other
    assert abs((ours - truth).mean()) < 3 * sigma.mean() / np.sqrt(len(truth))
    assert abs((theirs - truth).mean()) < 3 * sigma.mean() / np.sqrt(len(truth))
    assert 0.7 < (ours - truth).std() / sigma.mean() < 1.3
    assert 0.7 < (theirs - truth).std() / sigma.mean() < 1.3
    assert np.mean(np.abs(ours - truth) <= 3 * sigma + 1e-9) > 0.98


def test_band_keys_and_lsh_parameters():
    sig = text_signatures([TEXT])[0]
    keys = band_keys(sig, 16, 8)
    assert len(keys) == 16 and len(set(keys)) == 16 and keys == band_keys(sig.copy(), 16, 8)
    other = sig.copy()
    other[8 * 3 + 2] ^= 1  # change one row of band 3
    changed = [i for i, (a, b) in enumerate(zip(keys, band_keys(other, 16, 8), strict=True)) if a != b]
    assert changed == [3]
    assert optimal_bands_rows(0.8, 128) == (9, 13)  # datasketch's own optimum
    assert DedupConfig().lsh_params() == (16, 8) and DedupConfig(verify=False).lsh_params() == (9, 13)
    assert collision_probability(0.8, 16, 8) > 0.94 and collision_probability(0.5, 16, 8) < 0.07


def test_bucket_edges_small_and_large():
    assert sorted(bucket_edges(("k", ["c", "a", "b", "a"]), 32)) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert list(bucket_edges(("k", ["a"]), 32)) == []
    ids = [f"{i:03d}" for i in range(50)]
    edges = list(bucket_edges(("k", ids), 32))
    assert len(edges) == 49 + 48 and ("000", "049") in edges and ("010", "011") in edges


def _components(edges, rounds=8):
    results = {}
    with make_pipeline() as p:
        labels, violations = p | __import__("apache_beam").Create(edges) | ConnectedComponents(rounds)
        results["labels"], results["violations"] = labels, violations
        return labels, violations, p


@pytest.mark.parametrize(
    "edges,expected",
    [
        # a chain in scrambled id order: 17-03-11-08-19-01-14
        ([("17", "03"), ("03", "11"), ("11", "08"), ("08", "19"), ("19", "01"), ("01", "14")],
         {n: "01" for n in ["17", "03", "11", "08", "19", "01", "14"]}),
        # a star, a separate pair, a triangle
        ([("5", "1"), ("5", "2"), ("5", "3"), ("5", "4"), ("7", "8"), ("a", "b"), ("b", "c"), ("c", "a")],
         {"1": "1", "2": "1", "3": "1", "4": "1", "5": "1", "7": "7", "8": "7", "a": "a", "b": "a", "c": "a"}),
    ],
)
def test_connected_components(edges, expected):
    import apache_beam as beam

    with make_pipeline() as p:
        labels, violations = p | beam.Create(edges) | ConnectedComponents(8)
        assert_that(labels, equal_to(sorted(expected.items())), label="labels")
        assert_that(violations, equal_to([0]), label="violations")


def test_long_chain_needs_more_rounds_and_says_so():
    import apache_beam as beam

    rng = np.random.default_rng(3)
    ids = [f"{i:04d}" for i in rng.permutation(300)]
    chain = list(zip(ids, ids[1:], strict=False))
    with make_pipeline() as p:
        labels, violations = p | beam.Create(chain) | ConnectedComponents(1)
        assert_that(violations, lambda v: v[0] > 0 or (_ for _ in ()).throw(AssertionError(v)), label="v1")
    with make_pipeline() as p:
        labels, violations = p | "c2" >> beam.Create(chain) | "cc2" >> ConnectedComponents(12)
        assert_that(violations, equal_to([0]), label="v12")
        assert_that(labels, equal_to([(i, min(ids)) for i in ids]), label="l12")


def _row(pid, passage):
    return {"pair_id": pid, "source": "s", "source_file": "f", "record_key": pid, "title": "t",
            "passage": passage, "meta": "{}", "cluster_id": None, "cluster_size": None}


def test_representative_policy():
    rows = [_row("b", "一二三四"), _row("a", "一二三"), _row("c", "一二三四"), _row("d", "一二")]
    out = list(KeepRepresentativeFn("longest").process(("a", rows)))
    kept = out[0]
    assert kept["pair_id"] == "b" and kept["cluster_id"] == "a" and kept["cluster_size"] == 4
    dead = [o.value for o in out[1:]]
    assert sorted(d["item_id"] for d in dead) == ["a", "c", "d"]
    assert all(d["reason"] == "near_duplicate" and "kept b" in d["detail"] for d in dead)
    out = list(KeepRepresentativeFn("lowest_id").process(("a", rows)))
    assert out[0]["pair_id"] == "a"


def test_size_buckets():
    assert [size_bucket(s) for s in [1, 10, 11, 100, 101, 5000]] == ["1", "10", "11-100", "11-100", "101-1000",
                                                                      "1001-10000"]
