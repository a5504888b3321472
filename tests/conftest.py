"""Shared fixtures: the prepared built-in model (converted once per machine, into the user's cache)."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def builtin_model_path():
    from trainer.models import prepare_builtin

    path, _record, _created = prepare_builtin("builtin:me5-small")
    return path


@pytest.fixture(scope="session")
def builtin_model(builtin_model_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(builtin_model_path), device="cpu", local_files_only=True)
