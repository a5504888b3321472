"""Shared fixtures: the prepared built-in model (converted once per machine, into the user's cache)."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def builtin_model_path():
    from cmtp.transforms.embedding import prepare_builtin

    path, _record, _created = prepare_builtin("builtin:me5-small")
    return path


@pytest.fixture(scope="session")
def builtin_model(builtin_model_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(builtin_model_path), device="cpu", local_files_only=True)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    from pathlib import Path

    from tests.tiny_models import build_tiny_model

    raw = Path(__file__).parent / "data" / "raw"
    corpus = [p.read_text(encoding="utf-8", errors="ignore")[:20000] for p in sorted(raw.rglob("*.tsv"))]
    corpus += [p.read_text(encoding="utf-8", errors="ignore")[:20000] for p in sorted(raw.rglob("*.jsonl"))]
    corpus.append("abcdefghijklmnopqrstuvwxyz0123456789:：，。？！")
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), corpus)
