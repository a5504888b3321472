"""Building dead-letter rows: every record a stage cannot use becomes one, with a reason and an excerpt."""

from __future__ import annotations

import json
from typing import Any

EXCERPT_CHARS = 2000
DEAD = "dead"  # tag of the dead-letter output of every multi-output DoFn


def dead_letter(
    stage: str,
    reason: str,
    source: str,
    source_file: str,
    record_key: str,
    raw: Any = "",
    detail: str = "",
    item_id: str | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A row of the ``dead_letter`` schema; ``raw`` (text, bytes or an object) is cut to 2000 characters."""
    if isinstance(raw, bytes):
        raw = raw[: EXCERPT_CHARS * 4].decode("utf-8", "backslashreplace")
    elif not isinstance(raw, str):
        raw = json.dumps(raw, ensure_ascii=False, default=str)
    return {
        "stage": stage,
        "reason": reason,
        "source": _storable(source),
        "source_file": _storable(source_file),
        "record_key": _storable(record_key),
        "item_id": _storable(item_id) if item_id is not None else None,
        "detail": _storable(detail[:EXCERPT_CHARS]),
        "raw_excerpt": _storable(raw[:EXCERPT_CHARS]),
        "meta": _storable(json.dumps(meta or {}, ensure_ascii=False, sort_keys=True)),
    }


def _storable(text: str) -> str:
    """``text`` as UTF-8 can hold it: an unpaired surrogate (JSON's "\\ud800") written as its escape, so the dead
    letter of a bad record is never itself unwritable."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def pair_dead_letter(stage: str, reason: str, pair: dict[str, Any], detail: str = "",
                     extra_meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The dead letter of a (title, passage) pair row, keeping its provenance and id; with ``extra_meta`` the
    pair's own ``meta`` is kept too, extended (the id of the pair kept in its place, a cluster)."""
    raw = {"title": pair.get("title"), "passage": (pair.get("passage") or "")[:1000]}
    meta = {**json.loads(pair.get("meta") or "{}"), **extra_meta} if extra_meta is not None else None
    return dead_letter(stage, reason, pair.get("source") or "?", pair.get("source_file") or "?",
                       pair.get("record_key") or "?", raw, detail, pair.get("pair_id"), meta)
