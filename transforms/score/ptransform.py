"""``ScorePairs``: the score stage as one composite transform, and ``ApplyThreshold``, the cut on its own
(used again by ``cmtp score --rethreshold`` to replay another threshold on stored scores without a model).

    pairs --check--> batches (GroupByKey on a hash of the pair id) --RunInference(pair handler)--> scored rows
       |                                                                    --ApplyThreshold--> kept | rejected
       \\--> dead letters: nothing to score (``unscorable``), a batch whose inference raised (``inference_error``)
"""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import RunInference

from cmtp.transforms.common.dead_letters import DEAD, pair_dead_letter
from cmtp.transforms.common.ids import shard_of
from cmtp.transforms.common.multi_output import MultiOutput
from cmtp.transforms.common.progress import ProgressCounter
from cmtp.transforms.embedding.handler import InferenceError

from .config import ScoreConfig
from .handler import SentencePairModelHandler
from .scoring import is_kept

STAGE = "score"
REJECTED = "rejected"


class ScoreResult(NamedTuple):
    kept: beam.PCollection
    rejected: beam.PCollection
    dead: beam.PCollection


class _CheckScorableFn(beam.DoFn):
    def process(self, pair):
        if not (pair.get("title") or "").strip() or not (pair.get("passage") or "").strip():
            yield beam.pvalue.TaggedOutput(DEAD, pair_dead_letter(STAGE, "unscorable", pair, "empty title or passage"))
            return
        yield pair


def _batches(element, size: int):
    """A hash group of pairs -> lists of at most ``size`` pairs, in pair-id order (the same on every run)."""
    _, pairs = element
    pairs = sorted(pairs, key=lambda p: p["pair_id"] or "")
    for start in range(0, len(pairs), size):
        yield pairs[start : start + size]


class _ToScoredRowFn(beam.DoFn):
    """A prediction -> the scored row (score as float32, the scorer's identity), counted for progress; a pair
    whose batch raised goes to the dead letters."""

    def __init__(self, scorer: str, scorer_hash: str, progress_dir: str | None = None):
        self.scorer, self.scorer_hash, self.progress_dir = scorer, scorer_hash, progress_dir
        self.counter = Metrics.counter(STAGE, "pairs_scored")

    def setup(self):
        self.progress = ProgressCounter(self.progress_dir)

    def process(self, prediction):
        self.counter.inc()
        self.progress.add()
        if isinstance(prediction.inference, InferenceError):
            yield beam.pvalue.TaggedOutput(DEAD, pair_dead_letter(STAGE, "inference_error", prediction.example,
                                                                  str(prediction.inference)))
            return
        yield {**prediction.example, "score": float(np.float32(prediction.inference)), "scorer": self.scorer,
               "scorer_hash": self.scorer_hash}

    def finish_bundle(self):
        self.progress.flush()


class _SplitAtThresholdFn(beam.DoFn):
    def __init__(self, threshold: float):
        self.threshold = threshold

    def process(self, row):
        row = {**row, "threshold": float(np.float32(self.threshold)), "kept": is_kept(row["score"], self.threshold)}
        yield row if row["kept"] else beam.pvalue.TaggedOutput(REJECTED, row)


class ApplyThreshold(beam.PTransform):
    """Scored rows -> (kept, rejected) at ``threshold`` (score >= threshold as float32, as stored)."""

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold = threshold

    def expand(self, scored):
        split = scored | "Split" >> MultiOutput(_SplitAtThresholdFn(self.threshold), REJECTED, main="kept")
        return split.kept, split[REJECTED]


PASSES_PER_GROUP = 8


def group_count(rows: int, batch_size: int) -> int:
    """Hash groups for ``rows`` pairs: about ``PASSES_PER_GROUP`` full forward passes each, so at most one pass
    per group is partly empty (64 fixed groups turned 500 pairs into passes of 8 and doubled the time). It
    depends on the data alone, not on the worker count, so any number of workers writes the same bytes."""
    return max(1, -(-rows // (PASSES_PER_GROUP * batch_size)))


class ScorePairs(beam.PTransform):
    def __init__(self, config: ScoreConfig, scorer_hash: str, progress_dir: str | None = None,
                 group_count: int = 64):
        """``group_count``: hash groups the pairs are batched in (each group is cut into ``inference_batch``
        batches; more groups spread the scoring over more workers): :func:`group_count` of the input's rows."""
        super().__init__()
        self.config, self.scorer_hash, self.progress_dir = config, scorer_hash, progress_dir
        self.group_count = group_count

    def expand(self, pairs):
        c = self.config
        checked = pairs | "Check" >> MultiOutput(_CheckScorableFn(), DEAD, main="ok")
        groups = max(1, self.group_count)
        predictions = (
            checked.ok
            | "HashGroup" >> beam.Map(lambda p: (shard_of(p.get("pair_id") or p["title"], groups), p))
            | "Group" >> beam.GroupByKey()
            | "Batches" >> beam.FlatMap(_batches, c.inference_batch)
            | "RunInference" >> RunInference(SentencePairModelHandler(c))
        )
        scored = predictions | "ToRow" >> MultiOutput(
            _ToScoredRowFn(c.model, self.scorer_hash, self.progress_dir), DEAD, main="rows")
        kept, rejected = scored.rows | "Threshold" >> ApplyThreshold(c.threshold)
        dead = (checked[DEAD], scored[DEAD]) | "AllDead" >> beam.Flatten()
        return ScoreResult(kept, rejected, dead)
