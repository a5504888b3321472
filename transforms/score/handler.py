"""A Beam RunInference model handler for sentence-transformers pair scoring.

Beam ships handlers for raw PyTorch modules and for HF pipelines, but none that encodes *pairs* with
sentence-transformers prompts and returns their cosine; this one does, on top of ``ModelHandler``. Loading
goes through cmtp's model registry (offline unless allowed); with ``share_model`` one copy of the model
serves every worker process of a machine (RunInference's multi-process sharing).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from .config import ScoreConfig
from .scoring import PairScorer


class SentencePairModelHandler(ModelHandler[dict, float, Any]):
    def __init__(self, config: ScoreConfig):
        super().__init__()
        self.config = config

    def load_model(self) -> PairScorer:
        return PairScorer(self.config)

    def run_inference(self, batch: Sequence[dict], model: PairScorer, inference_args=None
                      ) -> Iterable[PredictionResult]:
        """``model`` is the :class:`PairScorer` itself, or a proxy to it when shared across processes: only
        its methods are used, so the prompts are applied either way."""
        scores = model.score([p["title"] for p in batch], [p["passage"] for p in batch])
        return [PredictionResult(p, float(s)) for p, s in zip(batch, scores, strict=True)]

    def get_num_bytes(self, batch: Sequence[dict]) -> int:
        return sum(len(p["title"]) + len(p["passage"]) for p in batch) * 3

    def get_metrics_namespace(self) -> str:
        return "cmtp_score"

    def batch_elements_kwargs(self):
        return {"min_batch_size": 1, "max_batch_size": self.config.inference_batch}

    def share_model_across_processes(self) -> bool:
        return self.config.share_model
