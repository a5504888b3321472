"""The RunInference model handler shape every embedding step of cmtp uses (score's pairs, mine's text blocks).

Beam ships handlers for raw PyTorch modules and HF pipelines, but none for sentence-transformers with prompts,
and none whose failed batch becomes data instead of failing the job; subclasses say how to load and what to
compute, this base does the rest:

- each element RunInference receives is a batch already, formed upstream with a GroupByKey (or a block of
  rows), and RunInference's own batching is skipped: Beam's BatchElements emits the last batch of every bundle
  from ``finish_bundle``, whose output the DaskRunner drops (10 elements in, 8 out with batches of 4), so
  batches are formed where every runner keeps them;
- a batch that raises becomes :class:`InferenceError` results and the job goes on. Caught here rather than
  with ``RunInference(...).with_exception_handling()``, whose tagged outputs the DaskRunner mixes up;
- with ``share_model`` one copy of the model serves every worker process of a machine (one GPU).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from apache_beam.ml.inference.base import ModelHandler, PredictionResult


class InferenceError(str):
    """The inference of a batch raised: the text is the exception, for the dead letter."""


class BatchInferenceHandler(ModelHandler[Any, Any, Any]):
    """Subclasses implement ``load_model`` and ``infer(batch, model) -> one result per element``.

    ``model`` is the loaded object itself, or a proxy to it when shared across processes: only its methods
    are reachable through a proxy (attributes read as ``None``), so ``infer`` calls methods only."""

    metrics_namespace = "cmtp"

    def __init__(self, share_model: bool = False):
        super().__init__()
        self.share_model = share_model

    def infer(self, batch: Sequence[Any], model) -> Sequence[Any]:
        raise NotImplementedError

    def run_inference(self, batch: Sequence[Any], model, inference_args=None) -> Iterable[PredictionResult]:
        try:
            results = self.infer(batch, model)
        except Exception as exc:  # any failure of a batch (CUDA OOM, a tokenizer error) is that batch's alone
            error = InferenceError(f"{type(exc).__name__}: {exc}")
            return [PredictionResult(element, error) for element in batch]
        return [PredictionResult(element, result) for element, result in zip(batch, results, strict=True)]

    def get_metrics_namespace(self) -> str:
        return self.metrics_namespace

    def should_skip_batching(self) -> bool:
        return True

    def share_model_across_processes(self) -> bool:
        return self.share_model
