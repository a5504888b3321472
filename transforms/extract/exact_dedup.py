"""``ExactDedup``: keep one pair per normalised passage, or per normalised (title, passage).

One GroupByKey serves both checks: pairs are grouped by passage, the lowest ``pair_id`` of the group is kept
(so the choice does not depend on bundle order), and every other member is a ``duplicate_pair`` when a lower
id shares its title too, else a ``duplicate_passage``. With passage dedup off, groups are (title, passage).
Dropped pairs go to the dead letters with the id they duplicate.
"""

from __future__ import annotations

import apache_beam as beam

from cmtp.transforms.common.dead_letters import DEAD, pair_dead_letter
from cmtp.transforms.common.ids import stable_id
from cmtp.transforms.common.multi_output import MultiOutput

from .filters import normalize_for_match


def passage_key(pair: dict) -> str:
    return stable_id(normalize_for_match(pair["passage"]), length=32)


def pair_key(pair: dict) -> str:
    return stable_id(normalize_for_match(pair["title"]), normalize_for_match(pair["passage"]), length=32)


class _KeepLowestIdFn(beam.DoFn):
    def __init__(self, stage: str, by_passage: bool):
        self.stage, self.by_passage = stage, by_passage

    def process(self, element):
        _key, pairs = element
        pairs = sorted(pairs, key=lambda p: p["pair_id"])
        yield pairs[0]
        first_with_title: dict[str, str] = {}
        for pair in pairs:
            title = normalize_for_match(pair["title"])
            first = first_with_title.setdefault(title, pair["pair_id"])
            if pair is pairs[0]:
                continue
            if first != pair["pair_id"]:
                reason, kept = "duplicate_pair", first
            elif self.by_passage:
                reason, kept = "duplicate_passage", pairs[0]["pair_id"]
            else:  # cannot happen: a (title, passage) group has one title
                continue
            yield beam.pvalue.TaggedOutput(DEAD, pair_dead_letter(self.stage, reason, pair, f"duplicate of {kept}",
                                                                  {"kept_id": kept}))


class ExactDedup(beam.PTransform):
    """pairs -> (kept pairs, dead letters)."""

    def __init__(self, by_passage: bool = True, stage: str = "extract"):
        super().__init__()
        self.by_passage, self.stage = by_passage, stage

    def expand(self, pairs):
        key = passage_key if self.by_passage else pair_key
        result = (
            pairs
            | "Key" >> beam.Map(lambda p: (key(p), p))
            | "Group" >> beam.GroupByKey()
            | "KeepLowestId" >> MultiOutput(_KeepLowestIdFn(self.stage, self.by_passage), DEAD, main="kept")
        )
        return result.kept, result[DEAD]
