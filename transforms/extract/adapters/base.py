"""The adapter interface, the registry, and helpers shared by JSON-record adapters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cmtp.schemas.errors import CmtpError

from ..source_file import Extracted, MissingField, Rejected, SourceFile

ADAPTERS: dict[str, type[Adapter]] = {}


def register_adapter(name: str):
    def wrap(cls):
        cls.name = name
        ADAPTERS[name] = cls
        return cls

    return wrap


def get_adapter(name: str, options: dict[str, Any] | None = None) -> Adapter:
    if name not in ADAPTERS:
        raise CmtpError(f"unknown adapter {name!r}; known: {', '.join(sorted(ADAPTERS))}")
    return ADAPTERS[name](**(options or {}))


class Adapter:
    """Reads one :class:`SourceFile` into :class:`Extracted` records or :class:`Rejected` ones."""

    name = "?"

    def __init__(self, **options: Any):
        unknown = set(options) - set(self.option_names())
        if unknown:
            raise CmtpError(f"adapter {self.name!r} has no option(s) {sorted(unknown)}")
        self.options = options

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return ()

    def read(self, f: SourceFile) -> Iterator[Extracted | Rejected]:
        raise NotImplementedError


class JsonRecordAdapter(Adapter):
    """An adapter whose file is JSON (array, ``{"RECORDS": [...]}`` or lines) and whose record is an object."""

    def map(self, obj: dict[str, Any]) -> tuple[str | None, str, dict[str, Any]]:
        """(title, text, meta) of one record; raise :class:`MissingField` when a required field is absent."""
        raise NotImplementedError

    def read(self, f: SourceFile) -> Iterator[Extracted | Rejected]:
        yield from self.map_records(f.json_records())

    def map_records(self, records) -> Iterator[Extracted | Rejected]:
        """(key, object | Rejected) pairs -> records, with missing fields rejected."""
        for key, obj in records:
            if isinstance(obj, Rejected):
                yield obj
                continue
            try:
                title, text, meta = self.map(obj)
            except MissingField as exc:
                yield Rejected(key, "missing_field", str(exc), obj)
                continue
            yield Extracted(key, title, text, meta)


def text_field(obj: dict[str, Any], *names: str, required: bool = True) -> str | None:
    """The first of ``names`` present with a non-null value, as text (dotted names reach into objects)."""
    for name in names:
        value: Any = obj
        for part in name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            return value if isinstance(value, str) else str(value)
    if required:
        raise MissingField(" / ".join(names))
    return None


def pick(obj: dict[str, Any], *names: str) -> dict[str, Any]:
    """The listed fields that are present, for ``meta``."""
    return {n: obj[n] for n in names if n in obj and obj[n] not in (None, "")}
