"""Schema validation on good and bad rows and tables, and manifest reconciliation."""

import json

import pyarrow as pa
import pytest

from cmtp.schemas import (
    DEAD_LETTER,
    PAIR,
    PRETRAIN_TEXT,
    RAW_DOCUMENT,
    SCHEMAS,
    SCORED_PAIR,
    TRAINING_EXAMPLE,
    Manifest,
    ManifestError,
    SchemaValidationError,
    get_schema,
    rows_to_table,
    validate_row,
    validate_rows,
    validate_table,
)

PAIR_ROW = {
    "pair_id": "p1", "source": "wudao", "source_file": "a.json", "record_key": "0",
    "title": "标题", "passage": "正文内容", "meta": "{}",
}
GOOD = {
    "raw_document": {"doc_id": "d1", "source": "csl", "source_file": "a.tsv", "record_key": "3",
                     "title": None, "text": "摘要", "meta": '{"discipline": "工学"}'},
    "pair": PAIR_ROW,
    "scored_pair": {**PAIR_ROW, "cluster_id": "c1", "cluster_size": 2, "score": 0.5, "scorer": "builtin:me5-small",
                    "scorer_hash": "abc", "threshold": 0.43, "kept": True},
    "dead_letter": {"stage": "extract", "reason": "bad_json", "source": "wudao", "source_file": "a.json",
                    "record_key": "7", "item_id": None, "detail": "", "raw_excerpt": "{", "meta": "{}"},
    "training_example": {"example_id": "e1", "query": "问题", "pos": ["答案"], "neg": ["无关", "也无关"],
                         "instruction": "为这个句子生成表示以用于检索相关文章：", "source": "csl", "task": "retrieval",
                         "pos_scores": [0.9], "neg_scores": [0.3, 0.2], "neg_kinds": ["mined", "random"]},
    "pretrain_text": {"text_id": "t1", "source": "news", "text": "新闻正文"},
}


def test_every_schema_has_a_good_example_and_metadata():
    assert set(GOOD) == set(SCHEMAS)
    for name, schema in SCHEMAS.items():
        assert schema.metadata[b"cmtp.schema"].decode() == name
        assert all(f.metadata and f.metadata.get(b"description") for f in schema), name
        table = rows_to_table([GOOD[name]], schema)
        validate_table(table, schema)
        assert table.schema.equals(schema, check_metadata=False)


@pytest.mark.parametrize(
    "schema,row,field,fragment",
    [
        (PAIR, {k: v for k, v in PAIR_ROW.items() if k != "passage"}, "passage", "missing"),
        (PAIR, {**PAIR_ROW, "title": 3}, "title", "expected string, got int"),
        (PAIR, {**PAIR_ROW, "meta": "not json"}, "meta", "not valid JSON"),
        (PAIR, {**PAIR_ROW, "meta": "[1, 2]"}, "meta", "JSON object"),
        (PAIR, {**PAIR_ROW, "surprise": 1}, "surprise", "not in the schema"),
        (PAIR, {**PAIR_ROW, "cluster_size": True}, "cluster_size", "expected int32, got bool"),
        (TRAINING_EXAMPLE, {**GOOD["training_example"], "pos": "答案"}, "pos", "expected list<item: string>, got str"),
        (TRAINING_EXAMPLE, {**GOOD["training_example"], "pos": []}, "pos", "at least one"),
        (TRAINING_EXAMPLE, {**GOOD["training_example"], "neg": ["a", None]}, "neg", "element 1 is null"),
        (TRAINING_EXAMPLE, {**GOOD["training_example"], "neg_scores": [0.1]}, "neg_scores", "1 values for 2 texts"),
        (TRAINING_EXAMPLE, {**GOOD["training_example"], "neg_kinds": ["mined", "guess"]}, "neg_kinds", "unknown"),
        (TRAINING_EXAMPLE, {**GOOD["training_example"], "pos_scores": [float("nan")]}, "pos_scores", "NaN"),
        (SCORED_PAIR, {**GOOD["scored_pair"], "score": 0.42, "kept": True}, "kept", "threshold"),
        (DEAD_LETTER, {**GOOD["dead_letter"], "reason": None}, "reason", "missing or null"),
        (PRETRAIN_TEXT, {**GOOD["pretrain_text"], "text": b"bytes"}, "text", "expected string, got bytes"),
        (RAW_DOCUMENT, {**GOOD["raw_document"], "title": ["a"]}, "title", "expected string, got list"),
    ],
)
def test_bad_rows_name_the_field_and_row(schema, row, field, fragment):
    rows = [GOOD[schema.metadata[b"cmtp.schema"].decode()]] * 2 + [row]
    with pytest.raises(SchemaValidationError) as info:
        validate_rows(rows, schema)
    assert info.value.row == 2
    assert info.value.field == field
    assert fragment in str(info.value)
    assert "row 2" in str(info.value) and repr(field) in str(info.value)


def test_threshold_boundary_is_kept():
    validate_row({**GOOD["scored_pair"], "score": 0.43, "threshold": 0.43, "kept": True}, SCORED_PAIR)


def test_validate_table_finds_null_in_required_column_and_type_drift():
    rows = [PAIR_ROW, {**PAIR_ROW, "pair_id": "p2"}, {**PAIR_ROW, "pair_id": "p3"}]
    loose = pa.schema([f.with_nullable(True) for f in PAIR])
    table = pa.Table.from_pylist([{f.name: r.get(f.name) for f in PAIR} for r in rows], schema=loose)
    table = table.set_column(table.schema.get_field_index("title"), PAIR.field("title"),
                             pa.array(["a", None, "c"], pa.string()))
    with pytest.raises(SchemaValidationError) as info:
        validate_table(table, PAIR)
    assert (info.value.row, info.value.field) == (1, "title")

    drift = rows_to_table(rows, PAIR).set_column(0, pa.field("pair_id", pa.int64()), pa.array([1, 2, 3]))
    with pytest.raises(SchemaValidationError, match="pair_id.*int64"):
        validate_table(drift, PAIR)
    with pytest.raises(SchemaValidationError, match="missing"):
        validate_table(rows_to_table(rows, PAIR).drop_columns(["meta"]), PAIR)


def test_validate_table_applies_row_rules():
    bad = {**GOOD["training_example"], "neg_scores": [0.1, 0.2, 0.3]}
    table = rows_to_table([GOOD["training_example"], bad], TRAINING_EXAMPLE, validate=False)
    with pytest.raises(SchemaValidationError) as info:
        validate_table(table, TRAINING_EXAMPLE)
    assert (info.value.row, info.value.field) == (1, "neg_scores")


def test_get_schema_unknown_lists_known():
    with pytest.raises(KeyError, match="training_example"):
        get_schema("nope")


def test_manifest_reconciles_and_round_trips(tmp_path):
    m = Manifest(stage="extract", count_in=10, count_out=7, dropped={"too_short": 2, "bad_json": 1},
                 per_source={"csl": {"in": 6, "out": 5, "dropped": {"too_short": 1}},
                             "wudao": {"in": 4, "out": 2, "dropped": {"too_short": 1, "bad_json": 1}}},
                 config={"min_len": 10})
    path = m.write(str(tmp_path / "out"))
    back = Manifest.read(str(tmp_path / "out"))
    assert back.to_dict() == m.to_dict()
    data = json.loads(open(path).read())
    assert data["schema_version"] == "1.0" and "pyarrow" in data["versions"] and data["created_at"]


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"count_in": 10, "count_out": 7, "dropped": {"x": 2}}, "in=10 != out=7 + dropped=2"),
        ({"count_in": 3, "count_out": 3, "per_source": {"a": {"in": 2, "out": 1, "dropped": {}}}}, "source 'a'"),
        ({"count_in": 3, "count_out": 3, "per_source": {"a": {"in": 2, "out": 2, "dropped": {}}}}, "add up"),
    ],
)
def test_manifest_that_does_not_reconcile_is_refused(tmp_path, kwargs, fragment):
    m = Manifest(stage="dedup", **kwargs)
    with pytest.raises(ManifestError, match=fragment.replace("+", r"\+")):
        m.write(str(tmp_path))
    assert not (tmp_path / "manifest.json").exists()


def test_manifest_read_errors(tmp_path):
    with pytest.raises(ManifestError, match="no manifest"):
        Manifest.read(str(tmp_path))
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(ManifestError, match="not valid JSON"):
        Manifest.read(str(tmp_path))
    (tmp_path / "manifest.json").write_text('{"stage": "x"}')
    with pytest.raises(ManifestError, match="lacks count_in"):
        Manifest.read(str(tmp_path))


def test_manifest_floats_are_rounded_for_people_and_thresholds_keep_their_float32():
    import numpy as np

    from cmtp.schemas.manifest import for_people

    out = for_people({"rate": 193.59123456, "share": 0.8997999999999999, "threshold": 0.8997999999999999,
                      "nested": [{"suggested_threshold": 0.87823456789}], "n": 3, "name": "x"})
    assert out["rate"] == 193.591 and out["share"] == 0.8998 and out["n"] == 3 and out["name"] == "x"
    assert np.float32(out["threshold"]) == np.float32(0.8997999999999999)
    assert np.float32(out["nested"][0]["suggested_threshold"]) == np.float32(0.87823456789)
