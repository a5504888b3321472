"""Pair scoring with a sentence-transformers model: prompts, length-sorted batches, cosine of the two sides.

Used by the Beam model handler and, unchanged, by tests and benchmarks that compare against plain encode.
"""

from __future__ import annotations

import numpy as np

from cmtp.transforms import embedding
from cmtp.transforms.embedding import encode
from cmtp.transforms.embedding.blocks import EmbedderSpec, TextEmbedder

from .config import ScoreConfig


def resolve_prompts(model, config: ScoreConfig) -> tuple[str, str]:
    """(query prompt, passage prompt): the config's flags when given, else the model's own prompts, else none."""
    return embedding.resolve_prompts(model, config.query_prompt, config.passage_prompt)


def load_scoring_model(config: ScoreConfig):
    """The scorer on its device (cuda + fp16 when available), with the configured max sequence length."""
    return embedding.load_embedding_model(config.model, config.device, config.max_seq_length, config.fp16,
                                          config.allow_network, config.engine)


def score_pairs(model, titles: list[str], passages: list[str], config: ScoreConfig,
                prompts: tuple[str, str] | None = None) -> np.ndarray:
    """Cosine of each (title, passage), float32."""
    query_prompt, passage_prompt = prompts or resolve_prompts(model, config)
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
