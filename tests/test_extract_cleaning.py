"""Cleaning steps and quality filters of the extract stage."""

import pytest

from cmtp.transforms.extract.cleaning import Cleaner, collapse_repeated, remove_control_chars, strip_html
from cmtp.transforms.extract.config import ExtractConfig
from cmtp.transforms.extract.filters import PairFilter, cjk_ratio, dup_line_ratio, dup_ngram_ratio, load_blocklist

BODY = "长江是亚洲第一长河和世界第三长河，发源于青藏高原，干流流经十一个省级行政区，最终注入东海。"


@pytest.fixture(scope="module")
def clean():
    return Cleaner(ExtractConfig())


def test_html_is_stripped_with_line_breaks_and_entities():
    html = "<p><b>谢邀</b></p><p>首先&amp;其次</p><noscript><img src='x.jpg'></noscript><script>var a=1;</script>完"
    assert strip_html(html).split() == ["谢邀", "首先&其次", "完"]


def test_cleaner_normalises_width_links_addresses_and_script(clean):
    text = "ＡＢＣ１２３，詳見 https://example.com/a?b=1&c=2中文 或 www.test.cn 聯繫 foo.bar@mail.example.com 謝謝"
    out = clean(text)
    assert out.startswith("ABC123,详见")
    assert "http" not in out and "www" not in out and "@" not in out
    assert "联系" in out and "谢谢" in out and "中文" in out


def test_control_and_zero_width_characters_go(clean):
    assert remove_control_chars("a\x00b\u200bc\ufeffd\ne") == "abcd\ne"
    assert clean("第一行\r\n\r\n  第二行\t\t内容") == "第一行\n第二行内容"
    assert clean("标题  有   空格", is_title=True) == "标题有空格"


def test_collapse_repeated_passage():
    assert collapse_repeated(BODY + BODY) == BODY
    assert collapse_repeated(BODY * 3) == BODY
    assert collapse_repeated("短句短句") == "短句短句"  # unit below 20 characters is left alone
    assert collapse_repeated(BODY + BODY[:-3]) == BODY + BODY[:-3]


def test_ratios():
    assert cjk_ratio("中文abc") == pytest.approx(0.4)
    assert cjk_ratio("") == 0.0
    assert dup_line_ratio("重复的一行\n重复的一行\n不同的一行") == pytest.approx(10 / 15)
    assert dup_ngram_ratio(BODY, 20) == 0.0
    assert dup_ngram_ratio(BODY + "然后" + BODY, 20) > 0.9
    assert dup_ngram_ratio("短", 20) == 0.0


@pytest.mark.parametrize(
    "title,passage,reason",
    [
        ("长江", BODY, "title_too_short"),
        ("长" * 200, BODY, "title_too_long"),
        ("长江简介", "太短了", "passage_too_short"),
        ("长江简介", "长" * 9000, "passage_too_long"),
        ("English title", "This passage is written in English only and has no Chinese at all in it.", "low_cjk_ratio"),
        ("长江简介", "\n".join([BODY[:30]] * 3 + [BODY]), "repetitive_lines"),
        ("长江简介", BODY + "另外" + BODY + "以及" + BODY, "repetitive_ngrams"),
        ("网上赌场开业", BODY, "blocklist"),
        ("长江简介", BODY + "百家乐和六合彩", "blocklist"),
        ("长江是亚洲第一长河", BODY, "title_in_passage_head"),
        ("长江是亚洲第一长河", "原标题:长江是亚洲第一长河。" + BODY, "title_in_passage_head"),
        ("reserved-43243x1F", BODY, "placeholder_title"),
        ("doc_000123", BODY, "placeholder_title"),
        ("Untitled", BODY, "placeholder_title"),
        ("NULL", BODY, "placeholder_title"),
        ("iPhone 15 发布会", BODY, None),  # words, not an id
        ("GDP2023年增长", BODY, None),  # CJK in it
        ("长江简介", BODY, None),
        ("打击网络赌博", BODY + "警方破获一起百家乐案件", None),  # one passage term alone is news, not spam
        ("长江的源头", "专家介绍了很多情况，" + BODY + "而长江的源头在唐古拉山", None),  # title deep inside
    ],
)
def test_filters(title, passage, reason):
    f = PairFilter(ExtractConfig())
    got = f.title_reason(title) or f.passage_reason(passage) or f.pair_reason(title, passage)
    assert got == reason


def test_blocklist_is_extendable(tmp_path):
    extra = tmp_path / "mine.txt"
    extra.write_text("# my terms\n特价机票 # comment\n", encoding="utf-8")
    assert "特价机票" in load_blocklist([str(extra)]) and "百家乐" in load_blocklist()
    f = PairFilter(ExtractConfig(extra_blocklists=[str(extra)]))
    assert f.title_reason("今日特价机票") == "blocklist"
    assert PairFilter(ExtractConfig(blocklist=False)).title_reason("网上赌场开业") is None


def test_markdown_residue_is_stripped_and_counted():
    from cmtp.transforms.extract.cleaning import Cleaner, strip_markdown

    md = ("## 第一章 **长江**的源头\n> 引用一句话\n- 第一点：*重要*内容\n* 第二点\n---\n"
          "详见[长江简介](https://example.com/cj)和![地图](a.png)，代码`x = 1`，残留**标记")
    assert strip_markdown(md) == ("第一章 长江的源头\n引用一句话\n第一点：重要内容\n第二点\n\n"
                                  "详见长江简介和地图，代码x = 1，残留标记")
    assert strip_markdown("3*4=12，a * b 不是强调") == "3*4=12，a * b 不是强调"  # lone asterisks stay
    text, steps = Cleaner(ExtractConfig()).clean("《红楼梦》**作者**是曹雪芹")
    assert text == "《红楼梦》作者是曹雪芹" and steps == ["markdown"]
    assert Cleaner(ExtractConfig(strip_markdown=False))("**作者**") == "**作者**"


def test_escaped_newlines_and_tabs_become_whitespace_and_are_counted():
    from cmtp.transforms.extract.cleaning import Cleaner
    from cmtp.transforms.extract.config import ExtractConfig

    text, steps = Cleaner(ExtractConfig()).clean("记者报道：\\n\\n今天上午，\\t会议召开。\\r\\n会议持续两个小时。")
    assert text == "记者报道:\n今天上午, 会议召开。\n会议持续两个小时。" and "escaped_whitespace" in steps
    kept, steps = Cleaner(ExtractConfig(unescape_whitespace=False)).clean("用\\n表示换行")
    assert kept == "用\\n表示换行" and "escaped_whitespace" not in steps
