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


class InferenceError(str):
    """The inference of a pair's batch raised: the text is the exception, for the dead letter."""


class SentencePairModelHandler(ModelHandler[dict, float, Any]):
    """Each element RunInference receives is a batch of pairs already (``ScorePairs`` forms them with a
    GroupByKey) and RunInference's own batching is skipped: Beam's BatchElements emits the last batch of every
    bundle from ``finish_bundle``, whose output the DaskRunner drops (10 elements in, 8 out with batches of 4,
    9 out with batches of 1), so the batches are formed where every runner keeps them."""
    def __init__(self, config: ScoreConfig):
        super().__init__()
        self.config = config

    def load_model(self) -> PairScorer:
        return PairScorer(self.config)

    def run_inference(self, batch: Sequence[dict], model: PairScorer, inference_args=None
                      ) -> Iterable[PredictionResult]:
        """``model`` is the :class:`PairScorer` itself, or a proxy to it when shared across processes: only
        its methods are used, so the prompts are applied either way.

        A batch that raises becomes :class:`InferenceError` results (dead letters downstream) and the job goes on.
        Caught here rather than with ``RunInference(...).with_exception_handling()``, whose tagged outputs the
        DaskRunner mixes up (every prediction reached the failed-batch output)."""
        try:
            scores = model.score([p["title"] for p in batch], [p["passage"] for p in batch])
        except Exception as exc:  # any failure of a batch (CUDA OOM, a tokenizer error) is that batch's alone
            error = InferenceError(f"{type(exc).__name__}: {exc}")
            return [PredictionResult(p, error) for p in batch]
        return [PredictionResult(p, float(s)) for p, s in zip(batch, scores, strict=True)]

    def get_num_bytes(self, batch: Sequence[dict]) -> int:
        return sum(len(p["title"]) + len(p["passage"]) for p in batch) * 3

    def get_metrics_namespace(self) -> str:
        return "cmtp_score"

    def should_skip_batching(self) -> bool:
        return True

    def share_model_across_processes(self) -> bool:
        return self.config.share_model
