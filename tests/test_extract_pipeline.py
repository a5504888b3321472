"""The extract pipeline end to end on real samples plus bad input: nothing crashes, nothing is lost."""

import hashlib
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.extract import ShardOptions, run_extract
from schemas import DEAD_LETTER, PAIR, PRETRAIN_TEXT, Manifest, validate_table
from transforms.extract.config import ExtractConfig
from transforms.extract.dofns import SourceSpec

RAW = Path(__file__).parent / "data" / "raw"
GOOD_BODY = "长江是亚洲第一长河和世界第三长河，发源于青藏高原，干流流经十一个省级行政区，最终注入东海。"


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    records = [{"title": f"好的标题{i}", "content": GOOD_BODY + f"第{i}条。"} for i in range(4)]
    text = json.dumps(records, ensure_ascii=False)
    (d / "truncated.json").write_text(text[: len(text) - 40], encoding="utf-8")
    gbk = [{"title": "国标编码的标题", "content": "这是一段用国标编码保存的正文内容，用来检查编码识别是否正确无误。"}]
    (d / "gbk.jsonl").write_bytes("\n".join(json.dumps(r, ensure_ascii=False) for r in gbk).encode("gbk"))
    (d / "binary.json").write_bytes(bytes(range(256)) * 64)
    fields = [
        {"title": "", "content": ""},  # empty fields
        {"title": "超长的正文", "content": "很长" * 100_000},  # huge field
        {"title": "缺少正文"},  # missing field
        {"title": "正常的一条", "content": GOOD_BODY},
        {"title": "正常的一条", "content": GOOD_BODY},  # exact duplicate pair
        {"title": "另一个标题", "content": GOOD_BODY},  # duplicate passage
    ]
    (d / "fields.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in fields) + "\nnot json\n",
                                    encoding="utf-8")
    return d


def sources(bad_dir):
    return [
        SourceSpec("wudao", "wudao", str(RAW / "wudao/*.json")),
        SourceSpec("zhihu", "zhihu", str(RAW / "zhihu/*.jsonl")),
        SourceSpec("csl", "csl", str(RAW / "csl/*.tsv")),
        SourceSpec("news", "news", str(RAW / "news/*")),
        SourceSpec("lcsts", "lcsts", str(RAW / "lcsts/*.tsv")),
        SourceSpec("baike", "baike_qa", str(RAW / "handmade/baike*.jsonl")),
        SourceSpec("bad", "wudao", str(bad_dir / "*")),
    ]


def digest(directory: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob("*.parquet"))}


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, bad_inputs):
    out = tmp_path_factory.mktemp("extract")
    manifest = run_extract(sources(bad_inputs), str(out), shards=ShardOptions(num_shards=2, row_group_size=64))
    return out, manifest


def test_manifest_reconciles_and_counts_every_reason(extracted):
    out, manifest = extracted
    on_disk = Manifest.read(str(out)).check()
    assert on_disk.count_in == manifest.count_in > 190
    bad = on_disk.per_source["bad"]
    assert bad["out"] == 5  # 3 from the truncated array, the GBK record, one good line of fields.jsonl
    assert bad["dropped"] == {"binary_file": 1, "malformed_json": 2, "passage_too_long": 1, "missing_field": 1,
                              "no_title": 1, "duplicate_pair": 1, "duplicate_passage": 1}
    assert on_disk.outputs["pairs"]["rows"] == on_disk.count_out
    assert on_disk.outputs["dead_letters"]["rows"] == sum(on_disk.dropped.values())
    assert on_disk.dropped["no_title"] >= 10  # the CSL kg file has no titles


def test_outputs_validate_and_gbk_text_survives(extracted):
    out, _ = extracted
    pairs = pq.read_table(out / "pairs")
    validate_table(pairs, PAIR)
    validate_table(pq.read_table(out / "dead_letters"), DEAD_LETTER)
    pretrain = pq.read_table(out / "pretrain")
    validate_table(pretrain, PRETRAIN_TEXT)
    titles = set(pairs.column("title").to_pylist())
    assert "国标编码的标题" in titles
    assert any(t.startswith("公安机关销毁") for t in titles)  # the GB18030 Sogou file
    assert len(set(pairs.column("pair_id").to_pylist())) == pairs.num_rows
    # CSL kg abstracts have no title but feed pretraining text
    assert pretrain.num_rows > pairs.num_rows
    assert len(list((out / "pairs").glob("part-*-of-00002.parquet"))) == 2
    assert pq.ParquetFile(next((out / "pairs").glob("*.parquet"))).metadata.row_group(0).num_rows <= 64


def test_dead_letters_say_why(extracted):
    out, _ = extracted
    dead = pq.read_table(out / "dead_letters").to_pylist()
    by_reason = {d["reason"]: d for d in dead if d["source"] == "bad"}
    assert "truncated.json" in by_reason["malformed_json"]["source_file"] or any(
        d["reason"] == "malformed_json" and d["source_file"].endswith("truncated.json") for d in dead)
    assert by_reason["binary_file"]["record_key"] == "file"
    assert by_reason["missing_field"]["detail"] == "content"
    assert "duplicate of" in by_reason["duplicate_pair"]["detail"]
    assert json.loads(by_reason["duplicate_passage"]["meta"])["kept_id"]
    assert all(len(d["raw_excerpt"]) <= 2000 for d in dead)


def test_rerun_gives_identical_files(extracted, bad_inputs, tmp_path):
    out, _ = extracted
    again = tmp_path / "again"
    config = ExtractConfig(rebalance=True)
    run_extract(sources(bad_inputs), str(again), config, ShardOptions(num_shards=2, row_group_size=64), workers=2)
    for sub in ["pairs", "pretrain", "dead_letters"]:
        assert digest(again / sub) == digest(out / sub), sub


def test_rerun_into_the_same_directory_replaces_old_shards(tmp_path):
    spec = [SourceSpec("lcsts", "lcsts", str(RAW / "lcsts/*.tsv"))]
    run_extract(spec, str(tmp_path), shards=ShardOptions(num_shards=3))
    run_extract(spec, str(tmp_path), shards=ShardOptions(num_shards=1))
    assert [p.name for p in (tmp_path / "pairs").iterdir()] == ["part-00000-of-00001.parquet"]


def test_ids_do_not_depend_on_where_the_data_lives(tmp_path):
    copy = tmp_path / "elsewhere" / "lcsts"
    shutil.copytree(RAW / "lcsts", copy)
    a = run_extract([SourceSpec("lcsts", "lcsts", str(RAW / "lcsts/*.tsv"))], str(tmp_path / "a"))
    b = run_extract([SourceSpec("lcsts", "lcsts", str(copy / "*.tsv"))], str(tmp_path / "b"))
    ids = [sorted(pq.read_table(tmp_path / x / "pairs").column("pair_id").to_pylist()) for x in "ab"]
    assert ids[0] == ids[1] and a.count_out == b.count_out
