"""The extract stage's DoFns: read raw files into batches of documents, clean + filter each batch into pairs, and
drop the exact duplicates the keys found.

Every step sends what it cannot use to the dead letters with a reason; nothing is dropped silently. A batch's rows
live in scratch files between the steps (``transforms/common/scratch.py``): the elements carry the batch's name
and paths, and the exact dedup's shuffle carries keys.
"""

from __future__ import annotations

import json
import posixpath
import re
import traceback
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics

from cmtp.schemas import DEAD_LETTER, PAIR, PRETRAIN_TEXT, RAW_DOCUMENT
from cmtp.schemas.validate import rows_to_table
from cmtp.transforms.common import scratch
from cmtp.transforms.common.dead_letters import DEAD, dead_letter, pair_dead_letter
from cmtp.transforms.common.ids import stable_id
from cmtp.transforms.common.outcomes import DROPPED, IN, OUT, counts, fact
from cmtp.transforms.common.parquet_shards import spill
from cmtp.transforms.common.progress import ProgressCounter

from .adapters import get_adapter
from .cleaning import Cleaner
from .config import ExtractConfig
from .filters import PairFilter
from .source_file import ARCHIVE_ERRORS, Extracted, Rejected, SourceFile, archive_problem, open_source

STAGE = "extract"
PRETRAIN_ONLY = "pretrain_only"
CLEANING = "cleaning"  # facts: ("cleaning", step) once per document a cleaning step changed
PAIRS, PRETRAIN, KEYS, COUNTS = "pairs", "pretrain", "keys", "counts"
BATCH_DOCUMENTS = 4096  # documents per batch: what one step holds of a file at a time
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
    """A matched file -> batches ``(name, documents, dead letters)`` of ``batch_documents`` raw documents each and
    the dead letters met while reading them; ``name`` is unique and the same on every run (source, file, number)."""

    def __init__(self, spec: SourceSpec, progress_dir: str | None = None, index: int = 0,
                 batch_documents: int = BATCH_DOCUMENTS):
        self.spec, self.progress_dir, self.index, self.batch_documents = spec, progress_dir, index, batch_documents
        self.read_counter = Metrics.counter(STAGE, f"read_{spec.name}")
        self.dead_counter = Metrics.counter(STAGE, f"dead_read_{spec.name}")

    def setup(self):
        import importlib

        for module in self.spec.plugins:  # a worker process has only the built-in adapters registered
            importlib.import_module(module)
        self.adapter = get_adapter(self.spec.adapter, self.spec.options)
        self.progress = ProgressCounter(self.progress_dir, "read and clean")

    def finish_bundle(self):
        self.progress.flush()

    def process(self, readable_file):
        path = readable_file.metadata.path
        prefix = f"{self.index:03d}-{stable_id(self.spec.name, path, length=12)}"
        docs, dead, number = [], [], 0
        size, counted = readable_file.metadata.size_in_bytes or 0, 0
        for item in self._read(readable_file, path, self.spec.rel_name(path)):
            if isinstance(item, beam.pvalue.TaggedOutput):
                dead.append(item.value)
            else:
                docs.append(item)
            if len(docs) >= self.batch_documents:
                yield f"{prefix}-{number:06d}", docs, dead  # cleaned downstream before the loop goes on
                # the file's bytes, estimated from the text read (3 bytes a Chinese character), never past the file:
                # the bar of a few huge files moves as they are read, and reaches the total when they end
                step = min(3 * sum(len(d["text"]) + len(d["title"] or "") for d in docs), max(0, size - counted))
                self.progress.add(step)
                counted += step
                docs, dead, number = [], [], number + 1
        if docs or dead or number == 0:
            yield f"{prefix}-{number:06d}", docs, dead
        self.progress.add(max(0, size - counted))  # the file is read whole

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
                doc = raw_document(name, f, record)
                if surrogate := _lone_surrogate(doc):  # JSON's "\ud800": no UTF-8 exists for it (the job failed)
                    self.dead_counter.inc()
                    yield beam.pvalue.TaggedOutput(DEAD, dead_letter(
                        STAGE, "undecodable", name, f.path, record.key, {k: doc[k] for k in ("title", "text")},
                        f"unpaired surrogate {surrogate} (an escape no UTF-8 text can hold)", doc["doc_id"]))
                    continue
                self.read_counter.inc()
                yield doc
        except ARCHIVE_ERRORS as exc:  # the records before the damage were read; the rest is lost
            self.dead_counter.inc()
            yield beam.pvalue.TaggedOutput(DEAD, dead_letter(STAGE, archive_problem(exc), name, f.path, "file",
                                                             detail=f"{type(exc).__name__}: {exc}"))
        except Exception as exc:  # a reader bug or an I/O failure must not take the pipeline down
            self.dead_counter.inc()
            yield beam.pvalue.TaggedOutput(DEAD, dead_letter(
                STAGE, "read_error", name, f.path, "file", traceback.format_exc(limit=3),
                f"{type(exc).__name__}: {exc}"))


_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(doc: dict[str, Any]) -> str | None:
    """The first unpaired surrogate (as ``\\udXXX``) in a document's strings, or None."""
    for value in doc.values():
        if isinstance(value, str) and (found := _SURROGATE.search(value)):
            return found.group().encode("utf-8", "backslashreplace").decode("ascii")
    return None


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


class CleanBatchFn(beam.DoFn):
    """A batch of raw documents -> its pairs (before exact dedup, in a scratch file: ``(name, path)`` on ``pairs``;
    their keys by partition on ``keys``), its pretraining-only passages and its dead letters spilled for their
    writers, and its counts. Without exact dedup the pairs are spilled for the writer at once (``ready``)."""

    def __init__(self, config: ExtractConfig, folder: str, parts: int):
        self.config, self.folder, self.parts = config, folder, parts
        self.dedup = config.dedup_pair or config.dedup_passage

    def setup(self):
        self.clean = CleanPairFn(self.config)
        self.clean.setup()

    def process(self, element):
        from .exact_dedup import dedup_keys, group_partition

        name, docs, read_dead = element
        pairs, pretrain_only, dead, tally = [], [], list(read_dead), counts(_sources(docs + read_dead), IN)
        for doc in docs:
            for out in self.clean.process(doc):
                if not isinstance(out, beam.pvalue.TaggedOutput):
                    pairs.append(out)
                elif out.tag == DEAD:
                    dead.append(out.value)
                elif out.tag == PRETRAIN_ONLY:
                    pretrain_only.append(out.value)
                else:
                    tally += fact(CLEANING, out.value[1])
        dead_table = rows_to_table(dead, DEAD_LETTER, validate=False)  # spill() validates
        yield beam.pvalue.TaggedOutput(COUNTS, tally + counts(dead_table, DROPPED))
        if dead:
            yield beam.pvalue.TaggedOutput(DEAD, spill(dead_table, DEAD_LETTER, self._path("dead_letters", name)))
        if pretrain_only:
            yield beam.pvalue.TaggedOutput(PRETRAIN, spill(rows_to_table(pretrain_only, PRETRAIN_TEXT, validate=False),
                                                           PRETRAIN_TEXT,
                                                           self._path("pretrain", name)))
        if not pairs:
            return
        table = rows_to_table(pairs, PAIR, validate=False)  # validated when spilled for the writer
        if not self.dedup:
            yield from spill_pairs(table, self.folder, name)
            return
        yield beam.pvalue.TaggedOutput(PAIRS, (name, scratch.write_table(self._path("pending", name), table)))
        keys = dedup_keys(table, name, self.config.dedup_passage)
        part = group_partition(keys, self.parts)
        for q in np.unique(part):
            path = posixpath.join(self.folder, "keys", f"p{int(q):05d}", f"{name}.arrow")
            yield beam.pvalue.TaggedOutput(KEYS, (int(q), scratch.write_table(path, keys.filter(pa.array(part == q)))))

    def _path(self, output: str, name: str) -> str:
        return posixpath.join(self.folder, output, f"{name}.arrow")


def _sources(rows: list[dict]) -> pa.Table:
    return pa.table({"source": pa.array([r["source"] for r in rows], pa.string())})


def spill_pairs(table: pa.Table, folder: str, name: str):
    """Kept pairs and their passages as pretraining text, spilled for the two writers, with the pairs' count."""
    yield spill(table, PAIR, posixpath.join(folder, "pairs", f"{name}.arrow"))
    pretrain = pa.table({"text_id": table.column("pair_id"), "source": table.column("source"),
                         "text": table.column("passage")})
    yield beam.pvalue.TaggedOutput(PRETRAIN, spill(pretrain, PRETRAIN_TEXT,
                                                   posixpath.join(folder, "pretrain", f"pair-{name}.arrow")))
    yield beam.pvalue.TaggedOutput(COUNTS, counts(table, OUT))


class ExactDuplicatesFn(beam.DoFn):
    """``(partition, key files)`` -> ``(batch, decision file)`` for every batch with a duplicate to drop."""

    def __init__(self, by_passage: bool, folder: str):
        self.by_passage, self.folder = by_passage, folder

    def process(self, element):
        from .exact_dedup import exact_duplicates

        q, paths = element
        keys = pa.concat_tables([scratch.read_table(path) for path in sorted(paths)])
        for batch, decisions in sorted(exact_duplicates(keys, self.by_passage).items()):
            yield batch, scratch.write_table(posixpath.join(self.folder, "decisions", batch, f"p{q:05d}.arrow"),
                                             decisions)


class DropDuplicatesFn(beam.DoFn):
    """``(batch, {pairs, decisions})`` -> the batch's pairs without its exact duplicates (spilled for the writers);
    the duplicates as dead letters naming the id kept in their place."""

    def __init__(self, folder: str):
        self.folder = folder

    def process(self, element):
        name, joined = element
        (path,) = joined["pairs"]
        table = scratch.read_table(path)
        drop: dict[int, tuple[str, str]] = {}
        for decision in sorted(joined["decisions"]):
            for row, reason, kept in zip(*scratch.read_table(decision).to_pydict().values(), strict=True):
                drop[row] = (reason, kept)
        if drop:
            rows = sorted(drop)
            dead = [pair_dead_letter(STAGE, reason, pair, f"duplicate of {kept}", {"kept_id": kept})
                    for (reason, kept), pair in zip((drop[row] for row in rows), table.take(pa.array(rows)).to_pylist(),
                                                    strict=True)]
            dead_table = rows_to_table(dead, DEAD_LETTER, validate=False)
            yield beam.pvalue.TaggedOutput(DEAD, spill(dead_table, DEAD_LETTER, posixpath.join(
                self.folder, "dead_letters", f"dup-{name}.arrow")))
            yield beam.pvalue.TaggedOutput(COUNTS, counts(dead_table, DROPPED))
            keep = np.ones(table.num_rows, dtype=bool)
            keep[list(drop)] = False
            table = table.filter(pa.array(keep))
        if table.num_rows:
            yield from spill_pairs(table, self.folder, name)


def stash_documents(element, folder: str):
    """A batch's documents and read dead letters into scratch files (``--rebalance`` reshuffles the paths)."""
    name, docs, dead = element
    return name, scratch.write_table(posixpath.join(folder, "raw", f"{name}.arrow"), rows_to_table(docs, RAW_DOCUMENT,
                                                                                                   validate=False)), \
        scratch.write_table(posixpath.join(folder, "raw", f"dead-{name}.arrow"), rows_to_table(dead, DEAD_LETTER,
                                                                                               validate=False))


def unstash_documents(element):
    name, docs, dead = element
    return name, scratch.read_table(docs).to_pylist(), scratch.read_table(dead).to_pylist()
