"""The score stage's RunInference handler: a batch of pairs -> the cosine of each (title, passage)."""

from __future__ import annotations

from collections.abc import Sequence

from cmtp.transforms.embedding.handler import BatchInferenceHandler

from .config import ScoreConfig
from .scoring import PairScorer


class SentencePairModelHandler(BatchInferenceHandler):
    """Elements are batches of pairs (``ScorePairs`` forms them); the model is a :class:`PairScorer`, which
    applies the prompts where the model lives."""

    metrics_namespace = "cmtp_score"

    def __init__(self, config: ScoreConfig):
        super().__init__(config.share_model)
        self.config = config

    def load_model(self) -> PairScorer:
        return PairScorer(self.config)

    def infer(self, batch: Sequence[dict], model: PairScorer) -> list[float]:
        scores = model.score([p["title"] for p in batch], [p["passage"] for p in batch])
        return [float(s) for s in scores]

    def get_num_bytes(self, batch: Sequence[dict]) -> int:
        return sum(len(p["title"]) + len(p["passage"]) for p in batch) * 3
