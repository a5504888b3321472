"""Pair scoring with a sentence-transformers model: prompts, length-sorted batches, cosine of the two sides.

Used by the Beam model handler and, unchanged, by tests and benchmarks that compare against plain encode.
"""

from __future__ import annotations

import numpy as np

from .config import ScoreConfig

PASSAGE_PROMPT_NAMES = ("passage", "document", "doc", "corpus")


def resolve_prompts(model, config: ScoreConfig) -> tuple[str, str]:
    """(query prompt, passage prompt): the flags when given, else the model's own prompts, else none."""
    prompts = getattr(model, "prompts", None) or {}
    query = config.query_prompt if config.query_prompt is not None else prompts.get("query", "")
    passage = config.passage_prompt
    if passage is None:
        passage = next((prompts[n] for n in PASSAGE_PROMPT_NAMES if n in prompts), "")
    return query, passage


def load_scoring_model(config: ScoreConfig):
    """The scorer on its device (cuda + fp16 when available), with the configured max sequence length."""
    import torch

    from trainer.models import load_sentence_transformer, set_max_seq_length

    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_sentence_transformer(config.model, device=device, allow_network=config.allow_network)
    if config.max_seq_length:
        set_max_seq_length(model, config.max_seq_length)
    if device.startswith("cuda") and config.fp16:
        model.half()
    model.eval()
    return model


def encode(model, texts: list[str], prompt: str, batch_size: int) -> np.ndarray:
    """Normalised embeddings; sentence-transformers sorts by length before batching (less padding)."""
    return model.encode(
        texts, prompt=prompt or None, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
        show_progress_bar=False,
    ).astype(np.float32)


def score_pairs(model, titles: list[str], passages: list[str], config: ScoreConfig,
                prompts: tuple[str, str] | None = None) -> np.ndarray:
    """Cosine of each (title, passage), float32."""
    query_prompt, passage_prompt = prompts or resolve_prompts(model, config)
    q = encode(model, titles, query_prompt, config.batch_size)
    p = encode(model, passages, passage_prompt, config.batch_size)
    return np.einsum("ij,ij->i", q, p).astype(np.float32)


class PairScorer:
    """The scoring model with its prompts, resolved where the model lives.

    With RunInference's model sharing the handler only holds a proxy to this object (in another process);
    attributes of the model such as ``prompts`` are not visible through the proxy (reading them gave ``None``, so
    scores silently lost the e5 prompts), while method calls are forwarded. So everything that needs the model
    happens inside :meth:`score`."""

    def __init__(self, config: ScoreConfig):
        self.config = config
        self.model = load_scoring_model(config)
        self.prompts = resolve_prompts(self.model, config)

    def score(self, titles: list[str], passages: list[str]) -> np.ndarray:
        return score_pairs(self.model, titles, passages, self.config, self.prompts)

    def describe(self) -> dict:
        return {"query_prompt": self.prompts[0], "passage_prompt": self.prompts[1]}


def is_kept(score: float, threshold: float) -> bool:
    """Kept when score >= threshold, both compared as the float32 values stored in the output."""
    return bool(np.float32(score) >= np.float32(threshold))
