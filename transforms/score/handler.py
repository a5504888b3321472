"""The score stage's RunInference handler: a batch of pairs -> the cosine of each (title, passage)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from cmtp.transforms.common.progress import ProgressCounter
from cmtp.transforms.embedding.handler import BatchInferenceHandler

from .config import ScoreConfig
from .scoring import PairScorer

PASSES_PER_REPORT = 4  # forward passes between two progress counts


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
        """Each batch scored in slices of ``PASSES_PER_REPORT`` forward passes, the pairs counted after each: a batch
        of 1,024 pairs takes a minute on a CPU, and the bar would stand still for it. (A slice is sorted by length on
        its own, so a score may differ in its last float32 bit from one the whole batch was sorted for.)"""
        if self._progress is None:
            self._progress = ProgressCounter(self.progress_dir, "score")
            self._progress.flush()  # the phase starts with the first batch: the model has loaded
        step = self.config.batch_size * PASSES_PER_REPORT
        results = []
        for _name, table in batch:
            titles, passages = table.column("title").to_pylist(), table.column("passage").to_pylist()
            scores = []
            for start in range(0, len(titles), step):
                scores.append(np.asarray(model.score(titles[start:start + step], passages[start:start + step]),
                                         dtype=np.float32))
                self._progress.add(len(scores[-1]))
            results.append(np.concatenate(scores) if scores else np.zeros(0, np.float32))
        self._progress.flush()
        return results

    def get_num_bytes(self, batch: Sequence[tuple[str, pa.Table]]) -> int:
        return sum(table.nbytes for _name, table in batch)
