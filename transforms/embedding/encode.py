"""Loading an embedding model for inference, and encoding: the one place scoring, mining, evaluation and the
trainer take these rules from (prompts: :mod:`.prompts`)."""

from __future__ import annotations

import numpy as np


def load_embedding_model(name: str, device: str | None = None, max_seq_length: int | None = None,
                         fp16: bool = True, allow_network: bool = False, engine: str = "torch"):
    """A model from the registry for inference: on its device (cuda + fp16 when available), in eval mode, with
    ``max_seq_length`` (never above the model's own limit), its transformer run by ``engine`` (:mod:`.engines`)."""
    from .engines import resolve_device, use_engine
    from .registry import load_sentence_transformer, resolve_model, set_max_seq_length

    device = resolve_device(device, engine)
    model = load_sentence_transformer(name, device=device, allow_network=allow_network)
    use_engine(model, resolve_model(name, allow_network).path, engine)
    if max_seq_length:
        set_max_seq_length(model, max_seq_length)
    if device.startswith("cuda") and fp16:
        model.half()
    model.eval()
    return model


def encode(model, texts: list[str], prompt: str, batch_size: int, progress: bool = False,
           max_length: int | None = None) -> np.ndarray:
    """Normalised float32 embeddings; sentence-transformers sorts by length before batching (less padding).
    ``max_length`` cuts texts for this call only (None: the model's ``max_seq_length``)."""
    cut = {"processing_kwargs": {"text": {"max_length": max_length}}} if max_length else {}
    return model.encode(
        texts, prompt=prompt or None, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
        show_progress_bar=progress, **cut,
    ).astype(np.float32)
