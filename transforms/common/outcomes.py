"""Counting what happened to every record, for the manifest: in, out, and dropped by reason, per source.

Counts are computed from the data itself (the input batches, and the tables of the main output and the dead
letters as they are spilled to the writer), not from runner metrics, so ``in = out + dropped`` is a real check
that nothing was lost between them. A step that reads or makes a batch emits its counts as one small
``Counter`` ``{(source, kind, reason): n}`` (:func:`counts`); :class:`CountOutcomes` adds them up. Beam metrics
counters mirror the same numbers for runner UIs.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

IN, OUT, DROPPED = "in", "out", "dropped"
OUTCOMES_FILE = "_outcomes.json"


FACT = "fact"


def summarize(counted: list[tuple[tuple[str, str, str], int]]) -> dict[str, Any]:
    """Fold ``((source, kind, reason), n)`` pairs into manifest counts; ``kind == "fact"`` entries are
    stage-specific tallies ``(fact name, "fact", key)`` that go to ``facts``."""
    per_source: dict[str, dict[str, Any]] = defaultdict(lambda: {IN: 0, OUT: 0, DROPPED: {}})
    facts: dict[str, dict[str, int]] = defaultdict(dict)
    for (source, kind, reason), n in sorted(counted):
        if kind == FACT:
            facts[source][reason] = n
            continue
        entry = per_source[source]
        if kind == DROPPED:
            entry[DROPPED][reason] = entry[DROPPED].get(reason, 0) + n
        else:
            entry[kind] += n
    dropped: dict[str, int] = defaultdict(int)
    for entry in per_source.values():
        for reason, n in entry[DROPPED].items():
            dropped[reason] += n
    return {
        "count_in": sum(e[IN] for e in per_source.values()),
        "count_out": sum(e[OUT] for e in per_source.values()),
        "dropped": dict(sorted(dropped.items())),
        "per_source": dict(sorted(per_source.items())),
        "facts": dict(facts),
    }


def write_json(path: str, obj: Any) -> str:
    with FileSystems.create(path) as fh:
        fh.write(json.dumps(obj, ensure_ascii=False, indent=2).encode("utf-8"))
    return path


def read_json(path: str) -> Any:
    with FileSystems.open(path) as fh:
        return json.loads(fh.read().decode("utf-8"))


def counts(table: pa.Table, kind: str, reason: str | None = None) -> Counter:
    """``{(source, kind, reason): rows}`` of a table with a ``source`` column; dropped rows are counted by their
    ``reason`` column unless ``reason`` names one for all of them."""
    if table.num_rows == 0:
        return Counter()
    sources = ["?" if s is None else s for s in table.column("source").to_pylist()]  # as a dead letter names it
    if kind == DROPPED and reason is None:
        return Counter(zip(sources, [kind] * len(sources), table.column("reason").to_pylist(), strict=True))
    return Counter((source, kind, reason or "") for source in sources)


def fact(name: str, key: Any, n: int = 1) -> Counter:
    """A stage-specific tally for the manifest's ``facts``: ``n`` times ``key`` under ``name``."""
    return Counter({(name, FACT, str(key)): n}) if n else Counter()


def _add_up(parts) -> Counter:
    total = Counter()
    for part in parts:
        total.update(part)
    return total


class CountOutcomes(beam.PTransform):
    """Count ``Counter``s (a PCollection, or a tuple of them) -> one outcomes file in ``directory``."""

    def __init__(self, directory: str):
        super().__init__()
        self.path = FileSystems.join(directory, OUTCOMES_FILE)

    def expand(self, parts):
        path = self.path
        if isinstance(parts, tuple | list):
            parts = parts | "AllCounts" >> beam.Flatten()
        return (
            parts
            | "AddUp" >> beam.CombineGlobally(_add_up)
            | "Summarize" >> beam.Map(lambda total: summarize(list(total.items())))
            | "WriteOutcomes" >> beam.Map(lambda s: write_json(path, s))
        )
