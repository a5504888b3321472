"""Validation of rows and tables against the cmtp schemas, with errors that name the row and the field.

Arrow checks types when a table is built but says little about which row was wrong, and knows nothing of
our rules (``pos`` must be a list, score lists match their texts, ``meta`` is a JSON object). This module
checks Python rows before they are written and whole tables after they are read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .errors import CmtpError

NEG_KINDS = {"mined", "labeled", "random"}


class SchemaValidationError(CmtpError):
    """A row or table does not match its schema; ``row`` and ``field`` say where."""

    def __init__(self, schema: str, row: int | None, field: str | None, message: str):
        self.schema, self.row, self.field = schema, row, field
        parts = [f"row {row}" if row is not None else "", f"field {field!r}" if field else ""]
        where = ", ".join(p for p in parts if p)
        super().__init__(f"{schema}: {where}: {message}" if where else f"{schema}: {message}")


def _schema_name(schema: pa.Schema) -> str:
    return (schema.metadata or {}).get(b"cmtp.schema", b"?").decode()


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_error(value: Any, type_: pa.DataType) -> str | None:
    """Why ``value`` cannot be stored as ``type_``, or None when it can."""
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        ok = isinstance(value, str)
    elif pa.types.is_boolean(type_):
        ok = isinstance(value, bool)
    elif pa.types.is_integer(type_):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif pa.types.is_floating(type_):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif pa.types.is_list(type_) or pa.types.is_large_list(type_):
        if not isinstance(value, (list, tuple)):
            return f"expected {type_}, got {type(value).__name__} {_show(value)}"
        for i, item in enumerate(value):
            if item is None:
                return f"element {i} is null"
            why = _type_error(item, type_.value_type)
            if why:
                return f"element {i}: {why}"
        return None
    else:  # types we do not use in row form
        return None
    return None if ok else f"expected {type_}, got {type(value).__name__} {_show(value)}"


def _check_meta(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    if "meta" not in row or row["meta"] is None:
        return []
    try:
        parsed = json.loads(row["meta"])
    except (TypeError, ValueError):
        return [("meta", f"not valid JSON: {_show(row['meta'])}")]
    return [] if isinstance(parsed, dict) else [("meta", "must be a JSON object")]


def _texts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(t, str) and t.strip() for t in value)


def training_example_problems(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What stops a row from being trained on, as (field, problem): a query, at least one positive, non-empty
    text passages, and teacher scores / negative kinds either absent or one per passage. The one rule the schema
    validation, mine's labeled input and the trainer's stream all apply."""
    problems = []
    if "example_id" in row and not (isinstance(row["example_id"], str) and row["example_id"]):
        problems.append(("example_id", "needs an id"))  # a pair with a null pair_id was an AttributeError in training
    query = row.get("query")
    if not isinstance(query, str) or not query.strip():
        problems.append(("query", "needs a non-empty query"))
    pos, neg = row.get("pos") or [], row.get("neg") or []
    if len(pos) == 0:
        problems.append(("pos", "needs at least one positive"))
    for name, texts in [("pos", pos), ("neg", neg)]:
        if not _texts(texts):
            problems.append((name, "must be a list of non-empty texts"))
    for name, texts in [("pos_scores", pos), ("neg_scores", neg), ("neg_kinds", neg)]:
        values = row.get(name) or []
        if values and len(values) != len(texts):
            problems.append((name, f"has {len(values)} values for {len(texts)} texts"))
    return problems


def _check_training_example(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    problems = training_example_problems(row)
    bad_kinds = sorted(set(row.get("neg_kinds") or []) - NEG_KINDS)
    if bad_kinds:
        problems.append(("neg_kinds", f"unknown kinds {bad_kinds}; allowed {sorted(NEG_KINDS)}"))
    for name in ["pos_scores", "neg_scores"]:
        if any(isinstance(v, float) and math.isnan(v) for v in row.get(name) or []):
            problems.append((name, "contains NaN"))
    return problems


def _check_scored_pair(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    score, threshold, kept = row.get("score"), row.get("threshold"), row.get("kept")
    if isinstance(score, float) and math.isnan(score):
        return [("score", "is NaN")]
    if None not in (score, threshold, kept) and kept != (score >= threshold):
        return [("kept", f"is {kept} but score {score} vs threshold {threshold}")]
    return []


_ROW_RULES: dict[str, list[Callable[[Mapping[str, Any]], list[tuple[str, str]]]]] = {
    "raw_document": [_check_meta],
    "pair": [_check_meta],
    "scored_pair": [_check_meta, _check_scored_pair],
    "dead_letter": [_check_meta],
    "training_example": [_check_training_example],
    "pretrain_text": [],
}


def validate_row(row: Mapping[str, Any], schema: pa.Schema, index: int = 0) -> None:
    """Raise :class:`SchemaValidationError` naming the first bad field of ``row``."""
    name = _schema_name(schema)
    if not isinstance(row, Mapping):
        raise SchemaValidationError(name, index, None, f"expected a mapping, got {type(row).__name__}")
    extra = sorted(set(row) - set(schema.names))
    if extra:
        raise SchemaValidationError(name, index, extra[0], "is not in the schema")
    for f in schema:
        value = row.get(f.name)
        if value is None:
            if not f.nullable:
                raise SchemaValidationError(name, index, f.name, "is missing or null but required")
            continue
        why = _type_error(value, f.type)
        if why:
            raise SchemaValidationError(name, index, f.name, why)
    for rule in _ROW_RULES.get(name, []):
        for field, message in rule(row):
            raise SchemaValidationError(name, index, field, message)


def validate_rows(rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> int:
    """Validate every row; returns how many there were."""
    count = 0
    for count, row in enumerate(rows, start=1):
        validate_row(row, schema, count - 1)
    return count


def validate_table(table: pa.Table, schema: pa.Schema, check_rows: bool = True) -> None:
    """Check a table's columns and types, the nulls in required fields, and (optionally) the row rules."""
    name = _schema_name(schema)
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise SchemaValidationError(name, None, missing[0], "column is missing")
    extra = [c for c in table.column_names if c not in schema.names]
    if extra:
        raise SchemaValidationError(name, None, extra[0], "column is not in the schema")
    for f in schema:
        column = table.column(f.name)
        if not column.type.equals(f.type):
            raise SchemaValidationError(name, None, f.name, f"has type {column.type}, expected {f.type}")
        if not f.nullable and column.null_count:
            first = pc.index(pc.is_null(column), True).as_py()
            raise SchemaValidationError(name, first, f.name, "is null but required")
    if check_rows and _ROW_RULES.get(name):
        offset = 0
        for batch in table.to_batches(max_chunksize=8192):
            for i, row in enumerate(batch.to_pylist()):
                for rule in _ROW_RULES[name]:
                    for field, message in rule(row):
                        raise SchemaValidationError(name, offset + i, field, message)
            offset += batch.num_rows


def rows_to_table(rows: list[Mapping[str, Any]], schema: pa.Schema, validate: bool = True) -> pa.Table:
    """Validate ``rows`` and build a table with exactly ``schema`` (missing nullable fields become null)."""
    if validate:
        validate_rows(rows, schema)
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema)
