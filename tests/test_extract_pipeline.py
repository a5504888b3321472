"""The extract pipeline end to end on real samples plus bad input: nothing crashes, nothing is lost."""

import hashlib
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cmtp.pipelines.extract import run_extract
from cmtp.schemas import DEAD_LETTER, PAIR, PRETRAIN_TEXT, Manifest, validate_table
from cmtp.transforms.common.parquet_shards import ShardOptions
from cmtp.transforms.extract.config import ExtractConfig
from cmtp.transforms.extract.dofns import SourceSpec

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


def test_exact_dedup_keeps_the_lowest_id_whatever_the_input_order():
    """Keys of pairs in any batches and any order -> the same drops: the lowest id of a passage is kept."""
    import pyarrow as pa

    from cmtp.schemas import rows_to_table
    from cmtp.transforms.extract.exact_dedup import dedup_keys, exact_duplicates

    def pair(pid, title):
        return {"pair_id": pid, "source": "s", "source_file": "f", "record_key": pid, "title": title,
                "passage": GOOD_BODY, "meta": "{}"}

    titles = {"a1": "标题甲", "b2": "标题乙", "c3": "标题甲"}
    for batches in ([["b2", "a1"], ["c3"]], [["c3", "b2", "a1"]], [["a1"], ["b2"], ["c3"]]):
        keys = pa.concat_tables([dedup_keys(rows_to_table([pair(i, titles[i]) for i in ids], PAIR), f"b{n}", True)
                                 for n, ids in enumerate(batches)])
        dropped = {}
        for batch, decisions in exact_duplicates(keys.take(list(range(keys.num_rows))[::-1]), True).items():
            ids = batches[int(batch[1:])]
            for row, reason, kept in zip(*decisions.to_pydict().values(), strict=True):
                dropped[ids[row]] = (reason, kept)
        assert dropped == {"b2": ("duplicate_passage", "a1"), "c3": ("duplicate_pair", "a1")}, batches
    by_pair = exact_duplicates(dedup_keys(rows_to_table([pair(i, titles[i]) for i in titles], PAIR), "b", False),
                               False)
    assert by_pair["b"].to_pydict() == {"row": [2], "reason": ["duplicate_pair"], "kept_id": ["a1"]}


def test_a_json_escape_no_utf8_can_hold_costs_its_record_not_the_job(tmp_path):
    """A JSON "\\ud800" (an unpaired surrogate) failed the whole job with a UnicodeEncodeError naming no file."""
    lines = [json.dumps({"title": f"长江的源头{i}", "content": GOOD_BODY + str(i)}, ensure_ascii=False)
             for i in range(4)]
    lines[2] = '{"title": "坏的\\ud800标题", "content": "' + GOOD_BODY + '"}'
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    m = run_extract([SourceSpec("news", "news", str(tmp_path / "a.jsonl"))], str(tmp_path / "out"), workers=1)
    assert (m.count_in, m.count_out, m.dropped) == (4, 3, {"undecodable": 1})
    (dead,) = pq.read_table(tmp_path / "out" / "dead_letters").to_pylist()
    assert dead["record_key"] == "L3" and "unpaired surrogate \\ud800" in dead["detail"]


def test_placeholder_titles_and_markdown_are_counted_in_the_manifest(tmp_path):
    rows = [{"title": "reserved-43243x1F", "content": GOOD_BODY},
            {"title": "真正的标题",
             "content": "## 小标题\n**长江**是亚洲第一长河，发源于青藏高原，最终注入东海，全长六千多公里。"}]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    m = run_extract([SourceSpec("news", "news", str(tmp_path / "in.jsonl"))], str(tmp_path / "out")).check()
    assert m.dropped == {"placeholder_title": 1} and m.count_out == 1
    assert m.extra["documents_changed_by_cleaning_step"]["markdown"] == 1
    (passage,) = pq.read_table(tmp_path / "out" / "pairs").column("passage").to_pylist()
    assert passage.startswith("小标题\n长江是") and "*" not in passage


def test_adapter_options_and_plugins_from_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from cmtp.pipelines.app import app

    plugin = tmp_path / "my_adapters.py"
    plugin.write_text(
        "from cmtp.transforms.extract.adapters import register_adapter\n"
        "from cmtp.transforms.extract.adapters.base import JsonRecordAdapter, text_field\n"
        "@register_adapter('qa_pairs')\n"
        "class QA(JsonRecordAdapter):\n"
        "    def map(self, obj):\n"
        "        return text_field(obj, 'q'), text_field(obj, 'a'), {}\n", encoding="utf-8")
    (tmp_path / "qa.jsonl").write_text(json.dumps({"q": "长江有多长", "a": GOOD_BODY}, ensure_ascii=False),
                                       encoding="utf-8")
    zhihu = tmp_path / "zhihu.jsonl"
    zhihu.write_text(json.dumps({"qid": 1, "title": "长江的源头", "desc": "在哪里",
                                 "content": "长江的正源是沱沱河，发源于唐古拉山脉主峰各拉丹冬雪山的西南侧冰川。"},
                                ensure_ascii=False), encoding="utf-8")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        result = CliRunner().invoke(app, ["extract", f"qa_pairs={tmp_path / 'qa.jsonl'}", f"zhihu={zhihu}",
                                          "--plugin", "my_adapters", "--adapter-option", "title_with_desc=true",
                                          "--out", str(tmp_path / "out"), "--workers", "1"])
    finally:
        sys.path.remove(str(tmp_path))
    assert result.exit_code == 0, result.output
    titles = sorted(pq.read_table(tmp_path / "out" / "pairs").column("title").to_pylist())
    assert titles == ["长江有多长", "长江的源头在哪里"]  # title + desc (the space between CJK goes)
    bad = CliRunner().invoke(app, ["extract", f"zhihu={zhihu}", "--adapter-option", "nosuch=1", "--out",
                                   str(tmp_path / "o2")])
    assert "no adapter has option(s) nosuch" in str(bad.exception)
