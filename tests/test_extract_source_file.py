"""Per-file reading: encoding sniffing, binary files, undecodable lines, truncated and malformed JSON."""

import bz2
import gzip
import json

import zstandard

from cmtp.transforms.extract.source_file import BINARY, Rejected, SourceFile, sniff_encoding

TEXT = "今天天气很好，我们去公园散步。"


def test_sniff_encoding():
    assert sniff_encoding(TEXT.encode("utf-8")) == "utf-8"
    assert sniff_encoding(b"\xef\xbb\xbf" + TEXT.encode("utf-8")) == "utf-8-sig"
    assert sniff_encoding(TEXT.encode("gbk"), complete=True) == "gb18030"
    assert sniff_encoding(TEXT.encode("gb18030")) == "gb18030"
    assert sniff_encoding(bytes(range(256)) * 10) == BINARY
    # a sample cut inside a multi-byte character is still UTF-8
    assert sniff_encoding(TEXT.encode("utf-8")[:-1]) == "utf-8"
    assert sniff_encoding(TEXT.encode("utf-8")[:-1], complete=True) != "utf-8"


def test_lines_with_undecodable_bytes_become_rejected(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(("\n".join(json.dumps({"title": f"标题{i}", "content": TEXT}, ensure_ascii=False)
                               for i in range(3)) + "\n").encode() + b'{"title": "\xff\xfe bad"}\n')
    f = SourceFile.from_path(str(path))
    records = list(f.json_records())
    assert [k for k, _ in records] == ["L1", "L2", "L3", "L4"]
    assert isinstance(records[3][1], Rejected) and records[3][1].reason == "undecodable"


def test_truncated_json_array_keeps_the_good_prefix(tmp_path):
    items = [{"title": f"标题{i}", "content": TEXT} for i in range(5)]
    text = json.dumps(items, ensure_ascii=False)
    path = tmp_path / "trunc.json"
    path.write_text(text[: int(len(text) * 0.7)], encoding="utf-8")
    records = list(SourceFile.from_path(str(path)).json_records())
    good = [r for _, r in records if isinstance(r, dict)]
    bad = [r for _, r in records if isinstance(r, Rejected)]
    assert len(good) == 3 and len(bad) == 1 and bad[0].reason == "malformed_json" and bad[0].key == "after:2"


def test_records_object_without_records_key(tmp_path):
    path = tmp_path / "obj.json"
    path.write_text('{\n "DATA": [1]\n}', encoding="utf-8")
    records = list(SourceFile.from_path(str(path)).json_records())
    assert [r.reason for _, r in records] == ["no_records"]


def test_compressed_inputs_are_read_transparently(tmp_path):
    lines = "\n".join(json.dumps({"title": "标题", "content": TEXT}, ensure_ascii=False) for _ in range(4))
    raw = lines.encode("utf-8")
    for name, data in [("a.jsonl.gz", gzip.compress(raw)), ("a.jsonl.bz2", bz2.compress(raw)),
                       ("a.jsonl.zst", zstandard.ZstdCompressor().compress(raw))]:
        path = tmp_path / name
        path.write_bytes(data)
        f = SourceFile.from_path(str(path))
        assert f.encoding == "utf-8", name
        assert len(list(f.json_records())) == 4, name


def test_a_gb18030_file_with_one_bad_byte_pair_keeps_its_other_lines(tmp_path):
    """One invalid pair in the first 64 KiB made the sniff fall back to UTF-8: 10 of 10 lines undecodable."""
    lines = [json.dumps({"title": f"标题{i}", "content": TEXT}, ensure_ascii=False).encode("gb18030")
             for i in range(10)]
    lines[4] = lines[4].replace("标题4".encode("gb18030"), b"\x81\x20")  # not a GB18030 character
    path = tmp_path / "gb.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    f = SourceFile.from_path(str(path))
    records = list(f.json_records())
    assert f.encoding == "gb18030"
    assert [r.reason for _, r in records if isinstance(r, Rejected)] == ["undecodable"]
    assert sum(isinstance(r, dict) for _, r in records) == 9


def test_a_gz_cut_before_64_kib_keeps_the_records_before_the_damage(tmp_path):
    """The sniff read 64 KiB in one call, met the end of the damaged stream and the file kept no record."""
    raw = "\n".join(json.dumps({"title": f"标题{i}", "content": TEXT * 3}, ensure_ascii=False)
                    for i in range(120)).encode("utf-8")
    packed = gzip.compress(raw)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(packed[: len(packed) * 2 // 3])
    assert len(raw) < 65536
    f = SourceFile.from_path(str(path))
    assert f.encoding == "utf-8"
    records = []
    with __import__("pytest").raises(EOFError):
        for _, record in f.json_records():
            records.append(record)
    assert len(records) > 14  # the complete lines before the damage


def test_a_gb18030_json_array_is_streamed(tmp_path):
    """A JSON array in GB18030 was decoded whole before parsing; it is transcoded as it streams."""
    items = [{"title": f"标题{i}", "content": TEXT * 40} for i in range(300)]  # past ijson's and the wrapper's chunks
    path = tmp_path / "a.json"
    path.write_bytes(json.dumps(items, ensure_ascii=False).encode("gb18030"))
    f = SourceFile.from_path(str(path))
    records = [r for _, r in f.json_records()]
    assert f.encoding == "gb18030" and records == items
