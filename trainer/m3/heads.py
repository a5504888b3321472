"""The sparse and multi-vector heads of BGE-M3, saved as FlagEmbedding's ``BGEM3FlagModel`` reads them.

``sparse_linear.pt`` (hidden -> 1; ``w_t = ReLU(W_lex h_t)``) and ``colbert_linear.pt`` (hidden -> hidden;
``E = norm(W_mul H)``) lie beside the encoder's weights, each a plain ``nn.Linear`` state dict (``weight``, ``bias``):
FlagEmbedding's ``EncoderOnlyEmbedderM3Runner.get_model`` loads exactly these two files, so a cmtp model folder is
also a BGE-M3 folder.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cmtp.schemas.errors import CmtpError

HEAD_NAMES = ("dense", "sparse", "multivector")
SPARSE_FILE, COLBERT_FILE = "sparse_linear.pt", "colbert_linear.pt"


def parse_heads(value) -> tuple[str, ...]:
    """``"dense,sparse,multivector"`` (or a list) -> the heads in canonical order; dense is always among them (the
    sentence-transformers model is the dense head, and the ensemble's first term)."""
    names = [n.strip() for n in (value.split(",") if isinstance(value, str) else value) if n.strip()]
    unknown = sorted(set(names) - set(HEAD_NAMES))
    if unknown:
        raise CmtpError(f"heads: {', '.join(unknown)} unknown; choose from {', '.join(HEAD_NAMES)}")
    if "dense" not in names:
        raise CmtpError("heads: dense is always trained (the model's own embedding); add it, e.g. "
                        "--heads dense,sparse,multivector")
    return tuple(h for h in HEAD_NAMES if h in names)


def parse_weights(value) -> tuple[float, float, float]:
    """``"1,0.3,1"`` -> the (dense, sparse, multi-vector) weights of the ensemble score (the paper's defaults)."""
    try:
        weights = tuple(float(v) for v in (value.split(",") if isinstance(value, str) else value))
    except ValueError:
        raise CmtpError(f"head weights {value!r}: three numbers, dense,sparse,multivector (e.g. 1,0.3,1)") from None
    if len(weights) != 3 or min(weights) < 0 or not any(weights):
        raise CmtpError(f"head weights {value!r}: three numbers >= 0, not all 0, dense,sparse,multivector "
                        "(e.g. 1,0.3,1)")
    return weights


def has_heads(folder) -> bool:
    """Whether a model folder carries BGE-M3 heads (both files, as FlagEmbedding requires)."""
    folder = Path(folder)
    return (folder / SPARSE_FILE).is_file() and (folder / COLBERT_FILE).is_file()


class M3Heads(nn.Module):
    """``sparse``: hidden -> 1 lexical weight per token; ``colbert``: hidden -> hidden per-token vector."""

    def __init__(self, hidden: int):
        super().__init__()
        self.sparse = nn.Linear(hidden, 1)
        self.colbert = nn.Linear(hidden, hidden)

    @classmethod
    def for_model(cls, folder, hidden: int) -> tuple[M3Heads, bool]:
        """The heads saved in ``folder`` (True), or new ones initialised from the current torch seed (False)."""
        heads = cls(hidden)
        if folder is None or not has_heads(folder):
            return heads, False
        folder = Path(folder)
        try:  # weights_only: a copied folder's .pt files never run code
            heads.sparse.load_state_dict(torch.load(folder / SPARSE_FILE, map_location="cpu", weights_only=True))
            heads.colbert.load_state_dict(torch.load(folder / COLBERT_FILE, map_location="cpu", weights_only=True))
        except Exception as exc:
            raise CmtpError(f"{folder}: its BGE-M3 heads ({SPARSE_FILE}, {COLBERT_FILE}) cannot be read as "
                            f"hidden-size-{hidden} linear layers: {str(exc).splitlines()[0]}") from None
        return heads, True

    def save(self, folder) -> None:
        folder = Path(folder)
        torch.save({k: v.detach().cpu() for k, v in self.sparse.state_dict().items()}, folder / SPARSE_FILE)
        torch.save({k: v.detach().cpu() for k, v in self.colbert.state_dict().items()}, folder / COLBERT_FILE)
