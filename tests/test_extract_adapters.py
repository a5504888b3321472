"""Each source adapter on real samples (tests/data/raw) and on its failure cases."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cmtp.schemas.errors import CmtpError
from cmtp.transforms.extract.adapters import ADAPTERS, get_adapter
from cmtp.transforms.extract.source_file import Extracted, Rejected, SourceFile

RAW = Path(__file__).parent / "data" / "raw"


def read(adapter, path, **options):
    records = list(get_adapter(adapter, options).read(SourceFile.from_path(str(path))))
    return [r for r in records if isinstance(r, Extracted)], [r for r in records if isinstance(r, Rejected)]


def test_registry_lists_every_format():
    assert {"wudao", "zhihu", "baike_qa", "csl", "news", "xlsum", "lcsts", "generic"} <= set(ADAPTERS)
    with pytest.raises(CmtpError, match="unknown adapter"):
        get_adapter("nope")
    with pytest.raises(CmtpError, match="no option"):
        get_adapter("wudao", {"title_field": "x"})


def test_wudao_array_keeps_fields_and_meta():
    good, bad = read("wudao", RAW / "wudao/wudaosailing_head30.json")
    assert len(good) == 30 and not bad
    first = good[0]
    assert first.title.startswith("美团王兴发内部信") and first.text.startswith("网易科技讯")
    assert first.meta["dataType"] == "科技" and first.meta["url"].startswith("https://tech.163.com")
    assert [r.key for r in good[:3]] == ["0", "1", "2"]


def test_wudao_records_object_with_empty_titles_takes_the_leading_question():
    good, bad = read("wudao", RAW / "wudao/flagai_jinrong_data.json")
    assert len(good) == 21 and not bad
    assert good[0].title == "平安信用卡上门激活失败是为啥？"
    assert good[0].text.startswith("平安信用卡上门激活失败的主要原因")
    assert good[0].meta["title_from"] == "leading_question"


def test_zhihu_api_objects():
    good, bad = read("zhihu", RAW / "zhihu/zhihu_api_head6.jsonl")
    assert len(good) == 6 and not bad
    assert good[0].title.startswith("如何看待上海警察") and "<p>" in good[0].text
    assert good[0].meta["question_id"] == 64751315


def test_zhihu_webtext2019zh_and_missing_content():
    good, bad = read("zhihu", RAW / "handmade/webtext2019zh.jsonl", title_with_desc=True)
    assert len(good) == 2 and good[0].title.endswith("文学创作？") and good[0].meta["qid"] == 65618973
    assert [(r.key, r.reason, r.detail) for r in bad] == [("L3", "missing_field", "content")]


def test_baike_qa_and_entries():
    good, bad = read("baike_qa", RAW / "handmade/baike2018qa.jsonl")
    assert [g.meta["category"] for g in good] == ["生活-美食", "教育-考试"]
    assert [(r.reason, r.detail) for r in bad] == [("missing_field", "answer / summary / abstract")]
    good, bad = read("baike_qa", RAW / "handmade/baike_entries.jsonl")
    assert [g.title for g in good] == ["长江", "杭州西湖"] and good[1].text.startswith("西湖位于")


def test_csl_tsv_layouts():
    good, _ = read("csl", RAW / "csl/ts_dev_head20.tsv")
    assert len(good) == 20 and good[0].meta == {"task": "ts"} and len(good[0].title) < len(good[0].text)
    good, _ = read("csl", RAW / "csl/clge_csl_val_head20.tsv")
    assert len(good) == 20 and good[0].title == "超立方体网络的3路结构连通度及子结构连通度"
    good, _ = read("csl", RAW / "csl/kg_dev_head10.tsv")
    assert len(good) == 10 and all(g.title is None for g in good)


def test_news_jsonl_sogou_gb18030_and_thucnews():
    good, _ = read("news", RAW / "news/inews_head30.jsonl")
    assert len(good) == 30 and good[0].title == "周六晚到卖场听夜场摇滚"
    source = SourceFile.from_path(str(RAW / "news/sogou_head20.gb18030.dat"))
    assert source.encoding == "gb18030"
    good, bad = read("news", RAW / "news/sogou_head20.gb18030.dat")
    assert len(good) + len(bad) == 20
    assert good[0].title.startswith("公安机关销毁") and good[0].meta["url"].startswith("http://news.sohu.com")
    good, _ = read("news", RAW / "news/clge_thucnews_sample.txt")
    assert len(good) == 1 and good[0].title.startswith("惨烈3加时") and good[0].text.startswith("新浪体育讯")


def test_lcsts_xlsum_generic():
    good, _ = read("lcsts", RAW / "lcsts/clge_train_head30.tsv")
    assert len(good) == 30 and good[0].title == "林志颖公司疑涉虚假营销无厂房无研发"
    good, _ = read("xlsum", RAW / "handmade/xlsum_zh.jsonl")
    assert good[0].text.startswith("世界气象组织表示")
    good, _ = read("xlsum", RAW / "handmade/xlsum_zh.jsonl", passage="text")
    assert good[0].text.startswith("世界气象组织周四")
    good, _ = read("generic", RAW / "handmade/generic.csv", title_field="question", passage_field="answer",
                   meta_fields="topic")
    assert [g.title for g in good] == ["如何办理护照？", "社保卡丢了怎么补办？"] and good[0].meta == {"topic": "政务"}


def test_generic_parquet_and_json_with_missing_column(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"q": ["问题一", "问题二"], "a": ["答案一", None]}), path)
    good, bad = read("generic", path, title_field="q", passage_field="a")
    assert [g.text for g in good] == ["答案一"] and [b.reason for b in bad] == ["missing_field"]
    (tmp_path / "t.jsonl").write_text(json.dumps({"title": "t", "passage": "p"}) + "\n[1]\n", encoding="utf-8")
    good, bad = read("generic", tmp_path / "t.jsonl")
    assert len(good) == 1 and [b.reason for b in bad] == ["not_an_object"]
