"""Loading an embedding model for inference, its prompts, and encoding: the one place scoring, mining,
evaluation and the trainer take these rules from."""

from __future__ import annotations

import numpy as np

PASSAGE_PROMPT_NAMES = ("passage", "document", "doc", "corpus")


def resolve_prompts(model, query_prompt: str | None = None, passage_prompt: str | None = None) -> tuple[str, str]:
    """(query prompt, passage prompt): the given ones when not None, else the model's own prompts, else none."""
    return choose_prompts(getattr(model, "prompts", None) or {}, query_prompt, passage_prompt)


def choose_prompts(prompts: dict[str, str], query_prompt: str | None = None,
                   passage_prompt: str | None = None) -> tuple[str, str]:
    """:func:`resolve_prompts` on a model's saved ``prompts`` mapping (``registry.saved_prompts``), for a process
    that needs the prompts but not the model."""
    query = query_prompt if query_prompt is not None else prompts.get("query", "")
    passage = passage_prompt
    if passage is None:
        passage = next((prompts[n] for n in PASSAGE_PROMPT_NAMES if n in prompts), "")
    return query, passage


def load_embedding_model(name: str, device: str | None = None, max_seq_length: int | None = None,
                         fp16: bool = True, allow_network: bool = False, engine: str = "torch"):
    """A model from the registry for inference: on its device (cuda + fp16 when available), in eval mode, with
    ``max_seq_length`` (never above the model's own limit), its transformer run by ``engine`` (:mod:`.engines`)."""
    import torch

    from .engines import resolve_engine, use_engine
    from .registry import load_sentence_transformer, resolve_model, set_max_seq_length

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    engine = resolve_engine(engine, device)
    model = load_sentence_transformer(name, device=device, allow_network=allow_network)
    use_engine(model, resolve_model(name, allow_network).path, engine)
    if max_seq_length:
        set_max_seq_length(model, max_seq_length)
    if device.startswith("cuda") and fp16:
        model.half()
    model.eval()
    return model


def encode(model, texts: list[str], prompt: str, batch_size: int, progress: bool = False) -> np.ndarray:
    """Normalised float32 embeddings; sentence-transformers sorts by length before batching (less padding)."""
    return model.encode(
        texts, prompt=prompt or None, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
        show_progress_bar=progress,
    ).astype(np.float32)
