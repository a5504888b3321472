"""The extract stage's DoFns: read raw files into documents, and clean + filter documents into pairs.

Both send what they cannot use to the ``dead`` output with a reason; nothing is dropped silently.
"""

from __future__ import annotations

import json
import posixpath
import traceback
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from cmtp.transforms.common.dead_letters import DEAD, dead_letter
from cmtp.transforms.common.ids import stable_id
from cmtp.transforms.common.progress import ProgressCounter

from .adapters import get_adapter
from .cleaning import Cleaner
from .config import ExtractConfig
from .filters import PairFilter
from .source_file import ARCHIVE_ERRORS, Extracted, Rejected, SourceFile, archive_problem, open_source

STAGE = "extract"
PRETRAIN_ONLY = "pretrain_only"
CLEANING = "cleaning"  # facts: ("cleaning", step) once per document a cleaning step changed
_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class SourceSpec:
    """One input of the extract stage: a glob read with an adapter, labelled ``name`` in the outputs."""

    name: str
    adapter: str
    pattern: str
    options: dict[str, Any] = field(default_factory=dict)
    plugins: tuple[str, ...] = ()  # modules that register adapters, imported again on every worker

    @property
    def base(self) -> str:
        """The pattern's directory part before the first glob character: file ids are relative to it."""
        cut = min((self.pattern.find(c) for c in _GLOB_CHARS if c in self.pattern), default=len(self.pattern))
        prefix = self.pattern[:cut]
        return prefix if cut < len(self.pattern) or prefix.endswith("/") else posixpath.dirname(prefix)

    def rel_name(self, path: str) -> str:
        base = self.base.rstrip("/")
        return path[len(base) + 1 :] if base and path.startswith(base + "/") else posixpath.basename(path)


class ReadRecordsFn(beam.DoFn):
    """A matched file -> raw documents (main output) and dead letters (``dead``)."""

    def __init__(self, spec: SourceSpec, progress_dir: str | None = None):
        self.spec, self.progress_dir = spec, progress_dir
        self.read_counter = Metrics.counter(STAGE, f"read_{spec.name}")
        self.dead_counter = Metrics.counter(STAGE, f"dead_read_{spec.name}")

    def setup(self):
        import importlib

        for module in self.spec.plugins:  # a worker process has only the built-in adapters registered
            importlib.import_module(module)
        self.adapter = get_adapter(self.spec.adapter, self.spec.options)
        self.progress = ProgressCounter(self.progress_dir)

    def finish_bundle(self):
        self.progress.flush()

    def process(self, readable_file):
        path = readable_file.metadata.path
        rel = self.spec.rel_name(path)
        yield from self._read(readable_file, path, rel)
        self.progress.add()  # a file read

    def _read(self, readable_file, path: str, rel: str):
        try:
            f = SourceFile(path, rel, lambda: open_source(path, lambda kind: readable_file.open(compression_type=kind)))
        except ARCHIVE_ERRORS as exc:  # damaged within the first 64 KiB
            self.dead_counter.inc()
            yield beam.pvalue.TaggedOutput(DEAD, dead_letter(STAGE, archive_problem(exc), self.spec.name, path,
                                                             "file", detail=f"{type(exc).__name__}: {exc}"))
            return
        yield from self.read_file(f)

    def read_file(self, f: SourceFile):
        """Shared with the single-process benchmark baseline: everything but Beam's file matching."""
        name = self.spec.name
        if f.is_binary:
            self.dead_counter.inc()
            yield beam.pvalue.TaggedOutput(DEAD, dead_letter(STAGE, "binary_file", name, f.path, "file",
                                                             detail="NUL or control bytes in the first 64 KiB"))
            return
        try:
            for record in self.adapter.read(f):
                if isinstance(record, Rejected):
                    self.dead_counter.inc()
                    yield beam.pvalue.TaggedOutput(DEAD, dead_letter(
                        STAGE, record.reason, name, f.path, record.key, record.raw, record.detail))
                    continue
                self.read_counter.inc()
                yield raw_document(name, f, record)
        except ARCHIVE_ERRORS as exc:  # the records before the damage were read; the rest is lost
            self.dead_counter.inc()
            yield beam.pvalue.TaggedOutput(DEAD, dead_letter(STAGE, archive_problem(exc), name, f.path, "file",
                                                             detail=f"{type(exc).__name__}: {exc}"))
        except Exception as exc:  # a reader bug or an I/O failure must not take the pipeline down
            self.dead_counter.inc()
            yield beam.pvalue.TaggedOutput(DEAD, dead_letter(
                STAGE, "read_error", name, f.path, "file", traceback.format_exc(limit=3),
                f"{type(exc).__name__}: {exc}"))


def raw_document(source: str, f: SourceFile, record: Extracted) -> dict[str, Any]:
    return {
        "doc_id": stable_id(source, f.rel_name, record.key),
        "source": source,
        "source_file": f.path,
        "record_key": record.key,
        "title": record.title,
        "text": record.text,
        "meta": json.dumps(record.meta, ensure_ascii=False, sort_keys=True, default=str),
    }


class CleanPairFn(beam.DoFn):
    """A raw document -> a clean pair, or a dead letter with the first failing check.

    Title-less documents whose passage passes are also emitted on ``pretrain_only``: they feed RetroMAE
    pretraining text although they cannot make a pair (their pair record is dropped as ``no_title``).
    """

    def __init__(self, config: ExtractConfig):
        self.config = config

    def setup(self):
        self.clean = Cleaner(self.config)
        self.filter = PairFilter(self.config)
        self.counters: dict[str, Any] = {}

    def _drop(self, doc, reason, detail=""):
        if reason not in self.counters:
            self.counters[reason] = Metrics.counter(STAGE, f"dropped_{reason}")
        self.counters[reason].inc()
        raw = {"title": doc["title"], "text": doc["text"][:2000]}
        return beam.pvalue.TaggedOutput(DEAD, dead_letter(
            STAGE, reason, doc["source"], doc["source_file"], doc["record_key"], raw, detail, doc["doc_id"],
            json.loads(doc["meta"])))

    def process(self, doc):
        if len(doc["text"]) > 10 * self.config.passage_max_chars:  # do not normalise megabytes to drop them
            yield self._drop(doc, "passage_too_long", f"{len(doc['text'])} raw characters")
            return
        passage, steps = self.clean.clean(doc["text"])
        title, title_steps = self.clean.clean(doc["title"], is_title=True) if doc["title"] else ("", [])
        for step in sorted(set(steps) | set(title_steps)):
            yield beam.pvalue.TaggedOutput(CLEANING, (CLEANING, step))
        passage_reason = self.filter.passage_reason(passage)
        if not title:
            if passage_reason is None:
                yield beam.pvalue.TaggedOutput(PRETRAIN_ONLY, {"text_id": doc["doc_id"], "source": doc["source"],
                                                               "text": passage})
            yield self._drop(doc, "no_title", "passage kept as pretraining text" if passage_reason is None else "")
            return
        reason = self.filter.title_reason(title) or passage_reason or self.filter.pair_reason(title, passage)
        if reason:
            yield self._drop(doc, reason)
            return
        yield {
            "pair_id": doc["doc_id"],
            "source": doc["source"],
            "source_file": doc["source_file"],
            "record_key": doc["record_key"],
            "title": title,
            "passage": passage,
            "meta": doc["meta"],
            "cluster_id": None,
            "cluster_size": None,
        }
