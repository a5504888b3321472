"""``ScorePairs``: the score stage as one composite transform, and ``ApplyThreshold``, the cut on its own
(used again by ``cmtp score --rethreshold`` to replay another threshold on stored scores without a model).

    pairs --check--> RunInference(pair handler, exceptions caught) --> scored rows --ApplyThreshold--> kept | rejected
       \\--> dead letters: nothing to score (``unscorable``), a batch whose inference raised (``inference_error``)
"""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import RunInference

from transforms.common.dead_letters import DEAD, pair_dead_letter

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


class _ToScoredRowFn(beam.DoFn):
    """A prediction -> the scored row (score as float32, the scorer's identity), counted for progress."""

    def __init__(self, scorer: str, scorer_hash: str, progress_total: int | None = None):
        self.scorer, self.scorer_hash, self.progress_total = scorer, scorer_hash, progress_total
        self.counter = Metrics.counter(STAGE, "pairs_scored")

    def setup(self):
        self.bar = None
        if self.progress_total is not None:  # the local runner: one process sees every pair
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.progress_total, desc="score", unit="pair", mininterval=2.0, smoothing=0.1)

    def process(self, prediction):
        self.counter.inc()
        if self.bar is not None:
            self.bar.update(1)
        yield {**prediction.example, "score": float(np.float32(prediction.inference)), "scorer": self.scorer,
               "scorer_hash": self.scorer_hash}

    def teardown(self):
        if getattr(self, "bar", None) is not None:
            self.bar.close()


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
        split = scored | "Split" >> beam.ParDo(_SplitAtThresholdFn(self.threshold)).with_outputs(REJECTED, main="kept")
        return split.kept, split[REJECTED]


def _failed_batch_dead_letters(failed):
    """RunInference's dead-letter element (the batch that raised, the exception) -> one dead letter per pair."""
    batch, exc = failed
    detail = f"{type(exc).__name__}: {exc}"
    return [pair_dead_letter(STAGE, "inference_error", pair, detail) for pair in batch]


class ScorePairs(beam.PTransform):
    def __init__(self, config: ScoreConfig, scorer_hash: str, progress_total: int | None = None):
        super().__init__()
        self.config, self.scorer_hash, self.progress_total = config, scorer_hash, progress_total

    def expand(self, pairs):
        c = self.config
        checked = pairs | "Check" >> beam.ParDo(_CheckScorableFn()).with_outputs(DEAD, main="ok")
        predictions, errors = (checked.ok | "RunInference" >> RunInference(
            SentencePairModelHandler(c)).with_exception_handling())
        scored = predictions | "ToRow" >> beam.ParDo(_ToScoredRowFn(c.model, self.scorer_hash, self.progress_total))
        kept, rejected = scored | "Threshold" >> ApplyThreshold(c.threshold)
        failed = errors.failed_inferences | "FailedBatches" >> beam.FlatMap(_failed_batch_dead_letters)
        dead = (checked[DEAD], failed) | "AllDead" >> beam.Flatten()
        return ScoreResult(kept, rejected, dead)
