"""The manifest every stage writes beside its outputs: what went in, what came out, what was dropped and why.

A manifest must reconcile: ``count_in == count_out + sum(dropped.values())``, overall and per source. A stage
builds one with :class:`Manifest`, calls :meth:`Manifest.check` and writes ``manifest.json`` with fsspec.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .datasets import SCHEMA_VERSION
from .errors import CmtpError

MANIFEST_NAME = "manifest.json"
SIGNIFICANT_DIGITS = 6


def for_people(value: Any, key: str = "") -> Any:
    """Floats rounded for reading: 6 significant digits (``0.8997999999999999`` -> ``0.8998``), except values
    that are part of a rule: a ``*threshold`` is written as the shortest decimal of the float32 it is applied as
    (scores and thresholds are compared in float32), so reading it back applies the same cut."""
    if isinstance(value, dict):
        return {k: for_people(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [for_people(v, key) for v in value]
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        if key.endswith("threshold"):
            import numpy as np

            return float(np.format_float_positional(np.float32(value), unique=True, trim="-"))
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    return value


# (field, type, description) - printed by `cmtp schema show manifest`
MANIFEST_FIELDS = [
    ("stage", "string", "stage that wrote the outputs: extract, dedup, score, mine, ..."),
    ("config", "object", "every option the stage ran with"),
    ("inputs", "list<string>", "input paths or globs as given, and the files they matched"),
    ("outputs", "object", "output name -> {path, rows, schema}"),
    ("count_in", "int", "records read"),
    ("count_out", "int", "records written to the main output"),
    ("dropped", "object", "drop reason -> records (all in the dead letters)"),
    ("per_source", "object", "source -> {in, out, dropped{reason: n}}, reconciling like the totals"),
    ("extra", "object", "stage-specific facts: LSH bands/rows, cluster sizes, thresholds, timings"),
    ("versions", "object", "python and package versions"),
    ("schema_version", "string", "version of the cmtp schemas"),
    ("cmtp_version", "string", "version of cmtp"),
    ("created_at", "string", "UTC time the manifest was written (ISO 8601)"),
]

_PACKAGES = [
    "cmtp", "apache-beam", "pyarrow", "datasketch", "numpy", "torch", "transformers",
    "sentence-transformers", "faiss-cpu", "faiss-gpu", "opencc",
]


class ManifestError(CmtpError):
    """A manifest does not reconcile or cannot be read."""


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def cmtp_version() -> str:
    try:
        return version("cmtp")
    except PackageNotFoundError:
        return "0+unknown"


@dataclass
class Manifest:
    stage: str
    config: dict[str, Any] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    count_in: int = 0
    count_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    per_source: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=package_versions)
    schema_version: str = SCHEMA_VERSION
    cmtp_version: str = field(default_factory=cmtp_version)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def check(self) -> Manifest:
        """Raise :class:`ManifestError` unless in = out + dropped, overall and for every source."""
        _reconcile(self.stage, "total", self.count_in, self.count_out, self.dropped)
        for source, counts in sorted(self.per_source.items()):
            _reconcile(self.stage, f"source {source!r}", counts.get("in", 0), counts.get("out", 0),
                       counts.get("dropped", {}))
        if self.per_source:
            sums = {k: sum(c.get(k, 0) for c in self.per_source.values()) for k in ("in", "out")}
            if (sums["in"], sums["out"]) != (self.count_in, self.count_out):
                raise ManifestError(f"{self.stage}: per-source counts {sums} do not add up to the totals "
                                    f"in={self.count_in} out={self.count_out}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, directory: str | None = None) -> str:
        """The manifest as JSON; outputs inside ``directory`` (the manifest's folder) as paths relative to it, so
        the folder can be moved (a stage's commit from its temporary folder) without rewriting the file."""
        data = self.to_dict()
        data["outputs"] = {name: {**o, "path": _relative(o.get("path"), directory)} if directory else o
                           for name, o in data["outputs"].items()}
        return json.dumps(for_people(data), indent=2, ensure_ascii=False, sort_keys=False)

    def write(self, directory: str) -> str:
        """Check and write ``manifest.json`` into ``directory`` (any fsspec URL); returns its path."""
        import fsspec

        self.check()
        path = directory.rstrip("/") + "/" + MANIFEST_NAME
        with fsspec.open(path, "w", encoding="utf-8", auto_mkdir=True) as fh:
            fh.write(self.to_json(directory))
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        known = {name for name, _, _ in MANIFEST_FIELDS}
        missing = sorted(k for k in ("stage", "count_in", "count_out", "dropped") if k not in data)
        if missing:
            raise ManifestError(f"manifest lacks {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def read(cls, path: str) -> Manifest:
        """Read a manifest file, or ``manifest.json`` inside a directory."""
        import fsspec

        if not path.endswith(".json"):
            path = path.rstrip("/") + "/" + MANIFEST_NAME
        try:
            with fsspec.open(path, "r", encoding="utf-8") as fh:
                manifest = cls.from_dict(json.load(fh))
            folder = path.rsplit("/", 1)[0] if "/" in path else "."
            manifest.outputs = {name: {**o, "path": _resolved(o.get("path"), folder)}
                                for name, o in manifest.outputs.items()}
            return manifest
        except FileNotFoundError as exc:
            raise ManifestError(f"no manifest at {path}") from exc
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path} is not valid JSON: {exc}") from exc


def _relative(path: str | None, directory: str) -> str | None:
    prefix = directory.rstrip("/") + "/"
    return path[len(prefix):] if path and path.startswith(prefix) else path


def _resolved(path: str | None, folder: str) -> str | None:
    """An output path as written by :meth:`Manifest.write`: relative ones are inside the manifest's folder."""
    if not path or "://" in path or path.startswith("/"):
        return path
    return f"{folder}/{path}"


def _reconcile(stage: str, what: str, count_in: int, count_out: int, dropped: dict[str, int]) -> None:
    total_dropped = sum(dropped.values())
    if count_in != count_out + total_dropped:
        raise ManifestError(
            f"{stage}: {what} does not reconcile: in={count_in} != out={count_out} + dropped={total_dropped} "
            f"({dict(sorted(dropped.items()))})"
        )
