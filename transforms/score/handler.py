"""The score stage's RunInference handler: a batch of pairs -> the cosine of each (title, passage)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from cmtp.transforms.embedding.handler import BatchInferenceHandler

from .config import ScoreConfig
from .scoring import PairScorer


class SentencePairModelHandler(BatchInferenceHandler):
    """Elements are ``(name, table)`` batches of pairs (``ScorePairs`` cuts them from row groups), each scored as
    one batch; the model is a :class:`PairScorer`, which applies the prompts where the model lives."""

    metrics_namespace = "cmtp_score"

    def __init__(self, config: ScoreConfig):
        super().__init__(config.share_model)
        self.config = config

    def load_model(self) -> PairScorer:
        return PairScorer(self.config)

    def infer(self, batch: Sequence[tuple[str, pa.Table]], model: PairScorer) -> list[np.ndarray]:
        return [np.asarray(model.score(table.column("title").to_pylist(), table.column("passage").to_pylist()),
                           dtype=np.float32) for _name, table in batch]

    def get_num_bytes(self, batch: Sequence[tuple[str, pa.Table]]) -> int:
        return sum(table.nbytes for _name, table in batch)
