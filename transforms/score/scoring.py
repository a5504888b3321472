"""Pair scoring with a sentence-transformers model: prompts, length-sorted batches, cosine of the two sides.

Used by the Beam model handler and, unchanged, by tests and benchmarks that compare against plain encode.
"""

from __future__ import annotations

import numpy as np

from cmtp.transforms.embedding import encode, resolve_prompts
from cmtp.transforms.embedding.blocks import EmbedderSpec, TextEmbedder

from .config import ScoreConfig


def score_pairs(model, titles: list[str], passages: list[str], config: ScoreConfig,
                prompts: tuple[str, str] | None = None) -> np.ndarray:
    """Cosine of each (title, passage), float32."""
    query_prompt, passage_prompt = prompts or resolve_prompts(model, config.query_prompt, config.passage_prompt)
    q = encode(model, titles, query_prompt, config.batch_size)
    p = encode(model, passages, passage_prompt, config.batch_size)
    return np.einsum("ij,ij->i", q, p).astype(np.float32)


class PairScorer(TextEmbedder):
    """The scoring model with its prompts; it scores inside its own method (see :class:`TextEmbedder`)."""

    def __init__(self, config: ScoreConfig):
        super().__init__(EmbedderSpec(config.model, config.query_prompt, config.passage_prompt, config.batch_size,
                                      config.max_seq_length, config.device, config.allow_network, fp16=config.fp16,
                                      engine=config.engine))
        self.config = config

    def score(self, titles: list[str], passages: list[str]) -> np.ndarray:
        return score_pairs(self.model, titles, passages, self.config, (self.prompts["query"], self.prompts["passage"]))


def is_kept(score: float, threshold: float) -> bool:
    """Kept when score >= threshold, both compared as the float32 values stored in the output."""
    return bool(np.float32(score) >= np.float32(threshold))
