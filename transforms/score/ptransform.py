"""``ScorePairs``: the score stage as one composite transform.

    pairs --check--> RunInference(sentence-transformers pair handler) --> scored pairs --split--> kept | rejected
       \\--> dead letters (nothing to score)
"""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import RunInference

from transforms.common.dead_letters import DEAD, dead_letter

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
            yield beam.pvalue.TaggedOutput(DEAD, dead_letter(
                STAGE, "unscorable", pair.get("source") or "?", pair.get("source_file") or "?",
                pair.get("record_key") or "?", {"title": pair.get("title"), "passage": pair.get("passage")},
                "empty title or passage", pair.get("pair_id")))
            return
        yield pair


class _ToScoredRowFn(beam.DoFn):
    def __init__(self, scorer: str, scorer_hash: str, threshold: float):
        self.scorer, self.scorer_hash, self.threshold = scorer, scorer_hash, threshold

    def process(self, prediction):
        score = float(np.float32(prediction.inference))
        row = {**prediction.example, "score": score, "scorer": self.scorer, "scorer_hash": self.scorer_hash,
               "threshold": float(np.float32(self.threshold)), "kept": is_kept(score, self.threshold)}
        if row["kept"]:
            yield row
        else:
            yield beam.pvalue.TaggedOutput(REJECTED, row)


class ScorePairs(beam.PTransform):
    def __init__(self, config: ScoreConfig, scorer_hash: str):
        super().__init__()
        self.config, self.scorer_hash = config, scorer_hash

    def expand(self, pairs):
        c = self.config
        checked = pairs | "Check" >> beam.ParDo(_CheckScorableFn()).with_outputs(DEAD, main="ok")
        scored = (
            checked.ok
            | "RunInference" >> RunInference(SentencePairModelHandler(c))
            | "ToRow" >> beam.ParDo(_ToScoredRowFn(c.model, self.scorer_hash, c.threshold)).with_outputs(
                REJECTED, main="kept")
        )
        return ScoreResult(scored.kept, scored[REJECTED], checked[DEAD])
