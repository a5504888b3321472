"""The score stage's RunInference handler: a batch of pairs -> the cosine of each (title, passage)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from cmtp.transforms.common.progress import ProgressCounter
from cmtp.transforms.embedding.handler import BatchInferenceHandler

from .config import ScoreConfig
from .scoring import PairScorer


class SentencePairModelHandler(BatchInferenceHandler):
    """Elements are ``(name, table)`` batches of pairs (``ScorePairs`` cuts them from row groups), each scored as
    one batch; the model is a :class:`PairScorer`, which applies the prompts where the model lives."""

    metrics_namespace = "cmtp_score"

    def __init__(self, config: ScoreConfig, progress_dir: str | None = None):
        super().__init__(config.share_model)
        self.config, self.progress_dir = config, progress_dir
        self._progress = None

    def load_model(self) -> PairScorer:
        loading = ProgressCounter(self.progress_dir, "load model")
        loading.flush()  # the phase starts now: its bar shows while the model loads
        model = PairScorer(self.config)
        loading.add(1)
        loading.flush()
        return model

    def infer(self, batch: Sequence[tuple[str, pa.Table]], model: PairScorer) -> list[np.ndarray]:
        """Each side of a batch embedded one forward pass at a time in length order (the order sentence-transformers
        sorts a whole call by, so the passes and the scores are those of one call), the texts counted after each
        pass: a batch of 1,024 pairs takes a minute on a CPU, and the bar would stand still for it."""
        if self._progress is None:
            self._progress = ProgressCounter(self.progress_dir, "score")
            self._progress.flush()  # the phase starts with the first batch: the model has loaded
        results = []
        for _name, table in batch:
            sides = [self._embed(model, table.column(column).to_pylist(), kind)
                     for column, kind in (("title", "query"), ("passage", "passage"))]
            results.append(np.einsum("ij,ij->i", *sides).astype(np.float32))
        self._progress.flush()
        return results

    def _embed(self, model: PairScorer, texts: list[str], kind: str) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts])  # the same call sentence-transformers makes: its order
        step = self.config.batch_size
        parts = []
        for start in range(0, len(order), step):
            parts.append(model.embed([texts[i] for i in order[start:start + step]], kind))
            self._progress.add(len(parts[-1]))
        vectors = np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)
        out = np.empty_like(vectors)
        out[order] = vectors
        return out

    def get_num_bytes(self, batch: Sequence[tuple[str, pa.Table]]) -> int:
        return sum(table.nbytes for _name, table in batch)
