"""Arrow schemas of every dataset the cmtp stages exchange, versioned together.

Each schema carries its name and ``SCHEMA_VERSION`` in its metadata and a description on every field, so a
Parquet file written by one stage says what it is. Stages read and write only these schemas; ``meta`` fields
hold a JSON object of source-specific extras (ids, categories, urls) that no stage interprets.
Bump ``SCHEMA_VERSION`` whenever a field is added, removed or changes type.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "1.0"


def _field(name: str, type_: pa.DataType, nullable: bool, description: str) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"description": description})


def _schema(name: str, description: str, fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(
        fields,
        metadata={"cmtp.schema": name, "cmtp.schema_version": SCHEMA_VERSION, "description": description},
    )


_STR, _F32, _I64, _BOOL = pa.string(), pa.float32(), pa.int64(), pa.bool_()

_SOURCE_FIELDS = [
    _field("source", _STR, False, "adapter / corpus name, e.g. wudao, zhihu, csl"),
    _field("source_file", _STR, False, "path or URL of the raw file the record came from"),
    _field("record_key", _STR, False, "position of the record in its file (line, index or key)"),
]
_META = _field("meta", _STR, False, "JSON object of source-specific extras ('{}' when none)")

RAW_DOCUMENT = _schema(
    "raw_document",
    "one record read from a raw dump, before cleaning",
    [
        _field("doc_id", _STR, False, "deterministic id: hash of source, source file name and record key"),
        *_SOURCE_FIELDS,
        _field("title", _STR, True, "title or question as found in the record"),
        _field("text", _STR, False, "body text as found in the record"),
        _META,
    ],
)

PAIR = _schema(
    "pair",
    "a cleaned (title, passage) pair: the unit of extract, dedup and score",
    [
        _field("pair_id", _STR, False, "deterministic id: hash of source, source file name and record key"),
        *_SOURCE_FIELDS,
        _field("title", _STR, False, "cleaned title (the query side)"),
        _field("passage", _STR, False, "cleaned passage (the document side)"),
        _META,
        _field("cluster_id", _STR, True, "near-duplicate cluster id after dedup (null before dedup)"),
        _field("cluster_size", pa.int32(), True, "members of the near-duplicate cluster (null before dedup)"),
    ],
)

SCORED_PAIR = _schema(
    "scored_pair",
    "a pair with its title-passage similarity, kept or rejected at the threshold",
    [
        *PAIR,
        _field("score", _F32, False, "cosine of normalised title and passage embeddings"),
        _field("scorer", _STR, False, "scoring model name as given by the user"),
        _field("scorer_hash", _STR, False, "sha256 prefix of the scoring model's weight files"),
        _field("threshold", _F32, False, "threshold in force when the row was scored"),
        _field("kept", _BOOL, False, "score >= threshold"),
    ],
)

DEAD_LETTER = _schema(
    "dead_letter",
    "a record a stage could not use or chose to drop, with the reason",
    [
        _field("stage", _STR, False, "stage that dropped the record: extract, dedup, score, mine"),
        _field("reason", _STR, False, "machine-readable drop reason, counted in the manifest"),
        *_SOURCE_FIELDS,
        _field("item_id", _STR, True, "pair_id / doc_id when the record got one"),
        _field("detail", _STR, False, "human-readable explanation ('' when the reason says it all)"),
        _field("raw_excerpt", _STR, False, "the first 2000 characters of the offending input"),
        _META,
    ],
)

TRAINING_EXAMPLE = _schema(
    "training_example",
    "one query with positives and negatives, the unit the trainer streams",
    [
        _field("example_id", _STR, False, "deterministic id of the example"),
        _field("query", _STR, False, "query text without instruction"),
        _field("pos", pa.list_(_STR), False, "positive passages (at least one)"),
        _field("neg", pa.list_(_STR), False, "negative passages (may be empty)"),
        _field("instruction", _STR, True, "instruction prepended to the query at training time (null: none)"),
        _field("source", _STR, False, "dataset / corpus the example came from"),
        _field("task", _STR, False, "task type: retrieval, sts, pair, classification, ..."),
        _field("pos_scores", pa.list_(_F32), False, "teacher scores of pos, same length as pos, or empty"),
        _field("neg_scores", pa.list_(_F32), False, "teacher scores of neg, same length as neg, or empty"),
        _field("neg_kinds", pa.list_(_STR), False, "origin of each neg: mined | labeled | random, or empty"),
    ],
)

PRETRAIN_TEXT = _schema(
    "pretrain_text",
    "a cleaned passage for RetroMAE-style pretraining",
    [
        _field("text_id", _STR, False, "deterministic id (the pair_id or doc_id it came from)"),
        _field("source", _STR, False, "adapter / corpus name"),
        _field("text", _STR, False, "cleaned passage"),
    ],
)

SCHEMAS: dict[str, pa.Schema] = {
    s.metadata[b"cmtp.schema"].decode(): s
    for s in [RAW_DOCUMENT, PAIR, SCORED_PAIR, DEAD_LETTER, TRAINING_EXAMPLE, PRETRAIN_TEXT]
}


def get_schema(name: str) -> pa.Schema:
    """The schema called ``name``; raises ``KeyError`` listing the known names."""
    try:
        return SCHEMAS[name]
    except KeyError:
        raise KeyError(f"unknown schema {name!r}; known: {', '.join(sorted(SCHEMAS))}") from None


def field_description(f: pa.Field) -> str:
    return (f.metadata or {}).get(b"description", b"").decode()
