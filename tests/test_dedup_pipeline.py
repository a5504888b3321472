"""Dedup end to end: planted near-duplicates in real sample pairs are removed, distinct texts are kept."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from cmtp.pipelines.dedup import run_dedup
from cmtp.pipelines.extract import run_extract
from cmtp.schemas import DEAD_LETTER, PAIR, Manifest, rows_to_table, validate_table
from cmtp.transforms.dedup.config import DedupConfig
from cmtp.transforms.dedup.shingles import jaccard, shingle_hashes
from cmtp.transforms.extract.dofns import SourceSpec

RAW = Path(__file__).parent / "data" / "raw"


def _substitute(text, rng, fraction):
    chars = list(text)
    for i in rng.choice(len(chars), size=max(1, int(len(chars) * fraction)), replace=False):
        chars[i] = chr(0x4E00 + int(rng.integers(20000)))
    return "".join(chars)


def _reorder(text):
    parts = [p for p in text.replace("。", "。\x00").split("\x00") if p]
    return "".join(parts[1:] + parts[:1]) if len(parts) > 2 else text


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("dedup")
    run_extract([SourceSpec("csl", "csl", str(RAW / "csl/*.tsv")), SourceSpec("news", "news", str(RAW / "news/inews*")),
                 SourceSpec("lcsts", "lcsts", str(RAW / "lcsts/*.tsv"))], str(root / "extract"))
    rows = pq.read_table(root / "extract" / "pairs").to_pylist()
    rng = np.random.default_rng(11)
    originals = [r for r in rows if len(r["passage"]) > 150][:8]
    planted_ids = {}
    for k, orig in enumerate(originals):
        variants = [_substitute(orig["passage"], rng, 0.015), _reorder(orig["passage"]) + "详见原文。"]
        for j, text in enumerate(variants):
            truth = jaccard(shingle_hashes(orig["passage"]), shingle_hashes(text))
            assert truth >= 0.8, truth
            pid = f"planted-{k}-{j}"
            rows.append({**orig, "pair_id": pid, "record_key": pid, "passage": text})
            planted_ids[pid] = orig["pair_id"]
    pairs_dir = root / "input"
    pairs_dir.mkdir()
    pq.write_table(rows_to_table(rows, PAIR), pairs_dir / "pairs.parquet")
    out = root / "out"
    manifest = run_dedup(str(pairs_dir), str(out))
    return rows, planted_ids, out, manifest


def test_planted_near_duplicates_are_removed_and_the_rest_kept(planted):
    rows, planted_ids, out, manifest = planted
    kept = pq.read_table(out / "pairs").to_pylist()
    validate_table(pq.read_table(out / "pairs"), PAIR)
    validate_table(pq.read_table(out / "dead_letters"), DEAD_LETTER)
    kept_ids = {r["pair_id"] for r in kept}
    for pid, orig in planted_ids.items():
        assert not ({pid, orig} <= kept_ids), f"{pid} and {orig} both kept"
    clusters = {r["cluster_id"]: r for r in kept if r["cluster_size"] > 1}
    assert len(clusters) >= len(set(planted_ids.values()))
    assert all(r["cluster_size"] == 3 for r in clusters.values() if r["pair_id"] in set(planted_ids.values()) |
               set(planted_ids))
    # everything else is distinct: nothing but planted copies (and natural duplicates) was dropped
    dead = pq.read_table(out / "dead_letters").to_pylist()
    assert all(d["reason"] == "near_duplicate" for d in dead)
    assert len(dead) >= len(planted_ids)
    for d in dead:
        meta = json.loads(d["meta"])
        assert meta["kept_id"] in kept_ids and meta["cluster_id"]
    assert manifest.count_in == len(rows) and manifest.count_out + len(dead) == len(rows)


def test_longest_passage_is_the_representative(planted):
    rows, planted_ids, out, _ = planted
    by_id = {r["pair_id"]: r for r in rows}
    kept = {r["cluster_id"]: r for r in pq.read_table(out / "pairs").to_pylist()}
    for d in pq.read_table(out / "dead_letters").to_pylist():
        keeper = kept[json.loads(d["meta"])["cluster_id"]]
        assert len(keeper["passage"]) >= len(by_id[d["item_id"]]["passage"])


def test_manifest_shows_lsh_parameters_and_cluster_sizes(planted):
    *_, out, _ = planted
    m = Manifest.read(str(out)).check()
    assert m.extra["lsh"]["bands"] == 16 and m.extra["lsh"]["rows"] == 8
    assert m.extra["cluster_sizes"]["3"] >= 8 and m.extra["cluster_sizes"]["1"] > 80
    assert m.extra["candidate_edges"] >= 16 and m.extra["passes"] == 1


def test_same_output_on_rerun_and_with_two_workers(planted, tmp_path):
    *_, out, _ = planted
    again = tmp_path / "again"
    run_dedup(str(out.parent / "input"), str(again), workers=2)
    for sub in ["pairs", "dead_letters"]:
        digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / sub).glob("*"))}
        assert digest == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((again / sub).glob("*"))}


def test_without_verification_and_by_title(planted, tmp_path):
    *_, out, _ = planted
    m = run_dedup(str(out.parent / "input"), str(tmp_path / "nv"), DedupConfig(verify=False))
    # datasketch's balanced optimum (9 x 13) catches a pair at J = 0.8 with p = 0.4 only: fewer planted copies go
    assert m.extra["lsh"]["bands"] == 9 and 10 <= m.dropped.get("near_duplicate", 0) <= 16
    m = run_dedup(str(out.parent / "input"), str(tmp_path / "title"), DedupConfig(field="title"))
    assert m.dropped.get("near_duplicate", 0) >= 16  # planted copies share their title


def test_a_null_field_or_a_repeated_id_costs_its_row_not_the_job(tmp_path):
    """A null passage or id was a TypeError inside Beam; a repeated id lost a row (in=40 != out=39)."""
    import pyarrow as pa

    base = "长江是亚洲第一长河，发源于青藏高原，干流流经十一个省级行政区，最终注入东海，全长六千三百公里。"
    rows = [{"pair_id": f"p{i:02d}", "source": "s", "source_file": "f", "record_key": str(i), "title": f"标题{i}",
             "passage": f"第{i}号文档。" + base[i:] + base[:i], "meta": "{}"} for i in range(10)]
    rows[3]["passage"] = None
    rows[5]["pair_id"] = None
    rows[7]["pair_id"] = "p06"  # the id of another row, with another text
    loose = pa.schema([f.with_nullable(True) for f in PAIR])  # as a file written by another tool may be
    (tmp_path / "in").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=loose), tmp_path / "in" / "pairs.parquet")
    m = run_dedup(str(tmp_path / "in"), str(tmp_path / "out"), DedupConfig(threshold=0.95)).check()
    assert m.count_in == 10 and m.dropped == {"missing_field": 2}
    dead = pq.read_table(tmp_path / "out" / "dead_letters").to_pylist()
    assert sorted(d["detail"] for d in dead) == ["pair_id is null", "passage is null"]
    kept = pq.read_table(tmp_path / "out" / "pairs").column("pair_id").to_pylist()
    assert kept.count("p06") == 2 and len(kept) == 8
