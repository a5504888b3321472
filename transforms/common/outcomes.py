"""Counting what happened to every record, for the manifest: in, out, and dropped by reason, per source.

Counts are computed from the data itself (the inputs, the main output and the dead letters), not from
runner metrics, so ``in = out + dropped`` is a real check that nothing was lost between them. Beam metrics
counters mirror the same numbers for runner UIs.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import apache_beam as beam
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


class CountOutcomes(beam.PTransform):
    """Turn the stage's inputs, main output and dead letters into one outcomes file in ``directory``."""

    def __init__(self, directory: str):
        super().__init__()
        self.path = FileSystems.join(directory, OUTCOMES_FILE)

    def expand(self, pcolls):
        """``(inputs, outputs, dead)`` or ``(inputs, outputs, dead, facts)``; facts are ``(name, key)``."""
        inputs, outputs, dead = pcolls[:3]
        path = self.path
        events = (
            inputs | "InEvents" >> beam.Map(lambda r: (r["source"], IN, "")),
            outputs | "OutEvents" >> beam.Map(lambda r: (r["source"], OUT, "")),
            dead | "DropEvents" >> beam.Map(lambda r: (r["source"], DROPPED, r["reason"])),
        )
        if len(pcolls) > 3:
            events += (pcolls[3] | "FactEvents" >> beam.Map(lambda f: (f[0], FACT, str(f[1]))),)
        return (
            events
            | "AllEvents" >> beam.Flatten()
            | "CountEvents" >> beam.combiners.Count.PerElement()
            | "Gather" >> beam.combiners.ToList()
            | "Summarize" >> beam.Map(summarize)
            | "WriteOutcomes" >> beam.Map(lambda s: write_json(path, s))
        )
