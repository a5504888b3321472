"""Dedup building blocks: shingles, signatures, band keys, connected components, representatives."""

import numpy as np
import pytest
from datasketch import MinHash

from cmtp.pipelines.beam_runner import make_pipeline
from cmtp.transforms.dedup.components import ConnectedComponents, both_ways, contract, labels
from cmtp.transforms.dedup.config import DedupConfig
from cmtp.transforms.dedup.dofns import DecideFn, bucket_edges, size_bucket
from cmtp.transforms.dedup.lsh import band_hashes, collision_probability, optimal_bands_rows
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


def test_band_hashes_and_lsh_parameters():
    sig = text_signatures([TEXT])
    keys = band_hashes(sig, 16, 8)[0]
    assert keys.dtype == np.uint64 and len(set(keys.tolist())) == 16
    np.testing.assert_array_equal(keys, band_hashes(sig.copy(), 16, 8)[0])
    other = sig.copy()
    other[0, 8 * 3 + 2] ^= 1  # change one row of band 3
    assert np.flatnonzero(keys != band_hashes(other, 16, 8)[0]).tolist() == [3]
    same_values = np.tile(sig[:, :8], (1, 16))  # every band holds the same values: the band's index tells them apart
    assert len(set(band_hashes(same_values, 16, 8)[0].tolist())) == 16
    assert optimal_bands_rows(0.8, 128) == (9, 13)  # datasketch's own optimum
    assert DedupConfig().lsh_params() == (16, 8) and DedupConfig(verify=False).lsh_params() == (9, 13)
    assert collision_probability(0.8, 16, 8) > 0.94 and collision_probability(0.5, 16, 8) < 0.07


def _edges(a, b):
    return list(zip(a.tolist(), b.tolist(), strict=True))


def test_bucket_edges_small_and_large():
    keys = np.array([7, 7, 7, 9, 5], dtype=np.uint64)  # one bucket of three, two of one
    assert _edges(*bucket_edges(keys, np.array([2, 0, 1, 4, 3]), 32)) == [(0, 1), (0, 2), (1, 2)]
    assert _edges(*bucket_edges(np.array([1, 2], dtype=np.uint64), np.array([0, 1]), 32)) == []
    big = np.arange(50)[::-1]
    edges = _edges(*bucket_edges(np.full(50, 3, dtype=np.uint64), big, 32))
    assert len(edges) == 49 + 48 and (0, 49) in edges and (10, 11) in edges
    # the same pair in two buckets is one edge
    assert _edges(*bucket_edges(np.array([1, 1, 2, 2], dtype=np.uint64), np.array([4, 8, 8, 4]), 32)) == [(4, 8)]


def _components(edges, rounds=8, parts=3):
    """Contraction rounds on arrays, as the pipeline's steps run them on ``parts`` partitions."""
    from cmtp.transforms.common.ids import partitions_of

    u, v = both_ways(np.array([e[0] for e in edges]), np.array([e[1] for e in edges]))
    for _ in range(rounds):
        part = partitions_of(u, parts)
        stars = [contract(u[part == p], v[part == p]) for p in range(parts)]
        u, v = both_ways(np.concatenate([s[0] for s in stars]), np.concatenate([s[1] for s in stars]))
    nodes, label, violations = labels(u, v)
    return dict(zip(nodes.tolist(), label.tolist(), strict=True)), violations


@pytest.mark.parametrize(
    "edges,expected",
    [
        # a chain in scrambled node order: 17-3-11-8-19-1-14
        ([(17, 3), (3, 11), (11, 8), (8, 19), (19, 1), (1, 14)], {n: 1 for n in [17, 3, 11, 8, 19, 1, 14]}),
        # a star, a separate pair, a triangle
        ([(5, 1), (5, 2), (5, 3), (5, 4), (7, 8), (20, 21), (21, 22), (22, 20)],
         {1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 7: 7, 8: 7, 20: 20, 21: 20, 22: 20}),
    ],
)
def test_connected_components(edges, expected):
    assert _components(edges) == (expected, 0)


def test_components_in_beam_over_partitions_and_a_long_chain_needs_more_rounds(tmp_path):
    import apache_beam as beam

    from cmtp.transforms.common import scratch
    from cmtp.transforms.dedup.components import write_routed

    rng = np.random.default_rng(3)
    ids = rng.permutation(300)
    u, v = both_ways(ids[:-1], ids[1:])
    assert _components(list(zip(ids[:-1], ids[1:], strict=True)), 1, 4)[1] > 0
    violations = {}
    for rounds in (1, 12):
        folder = tmp_path / f"r{rounds}"
        routed = list(write_routed(u, v, 4, f"{folder}/in", "edges"))
        with make_pipeline() as p:
            _, counted = (p | beam.Create(routed) | ConnectedComponents(rounds, 4, str(folder)))
            _ = counted | beam.CombineGlobally(sum) | beam.Map(lambda n, f=folder: (f / "v.txt").write_text(str(n)))
        violations[rounds] = int((folder / "v.txt").read_text())
        parts = [scratch.read_arrays(str(path)) for path in sorted((folder / "labels").glob("*.npz"))]
        assert len(parts) == 4  # every partition holds nodes
    assert violations[1] > 0 and violations[12] == 0
    assert sorted(np.concatenate([a["node"] for a in parts]).tolist()) == list(range(300))
    assert {a["label"].max() for a in parts} == {0}


def test_representative_policy(tmp_path):
    import pyarrow as pa

    from cmtp.transforms.common import scratch

    members = pa.table({"node": [10, 11, 12, 13, 20, 21], "passage_len": pa.array([4, 3, 4, 2, 5, 5], pa.int32()),
                        "pair_id": ["b", "a", "c", "d", "y", "x"], "label": [10, 10, 10, 10, 20, 20]})
    path = scratch.write_table(str(tmp_path / "members.arrow"), members)

    def decide(policy):
        step = DecideFn(policy, [0], str(tmp_path / policy))
        step.setup()  # as a runner does before the first element
        ((unit, decisions),) = step.process((0, [path]))
        assert unit == 0
        return {row["node"]: (row["cluster_id"], row["cluster_size"], row["kept_id"])
                for row in scratch.read_table(decisions).to_pylist()}

    longest = decide("longest")
    assert longest == {10: ("a", 4, "b"), 11: ("a", 4, "b"), 12: ("a", 4, "b"), 13: ("a", 4, "b"),
                       20: ("x", 2, "x"), 21: ("x", 2, "x")}  # longest passage, the lowest id on ties
    assert {k: v[2] for k, v in decide("lowest_id").items()} == {10: "a", 11: "a", 12: "a", 13: "a", 20: "x",
                                                                  21: "x"}


def test_size_buckets():
    assert [size_bucket(s) for s in [1, 10, 11, 100, 101, 5000]] == ["1", "10", "11-100", "11-100", "101-1000",
                                                                      "1001-10000"]
