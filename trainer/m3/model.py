"""The encoder with BGE-M3's heads: texts -> one float32 tensor holding the dense vector, the multi-vector token
vectors and the sparse token weights of each text (``scores.py`` reads it).

Layout of ``[B, L, d + 3]``, L the batch's token length: position 0 holds the dense vector (the model's own pooling,
normalised; [CLS] for a BGE-M3 model), positions 1..L-1 the normalised multi-vector vectors of tokens 1..L-1 (zero
on padding), as FlagEmbedding computes them from ``last_hidden_state[:, 1:]``; channel d is the token's lexical
weight (ReLU, zero on padding and on the tokenizer's [CLS], eos, [PAD] and [UNK], which carry none), d + 1
its token id and d + 2 the attention mask. One tensor per batch of texts, rather than a structure, so that gradient
caching (``gradcache.py``) and DDP handle the three outputs as they handle the dense embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .heads import M3Heads


def unused_token_ids(tokenizer) -> list[int]:
    """The special tokens FlagEmbedding gives no lexical weight: [CLS], eos, [PAD], [UNK]. XLM-R's eos is its
    separator; a BERT tokenizer has no eos, and its [SEP] keeps a weight there, as it does here, so that
    ``BGEM3FlagModel`` computes the same scores from a saved model."""
    ids = {getattr(tokenizer, f"{name}_token_id", None) for name in ("cls", "eos", "pad", "unk")}
    return sorted(i for i in ids if i is not None)


def pack(output: dict, heads: M3Heads, unused: torch.Tensor) -> torch.Tensor:
    """A sentence-transformers forward output (``token_embeddings``, ``attention_mask``, ``input_ids``,
    ``sentence_embedding``) -> the packed tensor described above."""
    hidden, mask, ids = output["token_embeddings"], output["attention_mask"], output["input_ids"]
    maskf = mask.to(hidden.dtype)
    dense = F.normalize(output["sentence_embedding"].float(), dim=-1)
    colbert = F.normalize((heads.colbert(hidden[:, 1:]) * maskf[:, 1:, None]).float(), dim=-1)
    weights = torch.relu(heads.sparse(hidden)).squeeze(-1).float()
    weights = weights * mask.float() * (~torch.isin(ids, unused.to(ids.device))).float()
    vectors = torch.cat([dense[:, None, :], colbert], dim=1)
    return torch.cat([vectors, weights[..., None], ids[..., None].float(), mask[..., None].float()], dim=-1)


def pad_cat(parts: list[torch.Tensor]) -> torch.Tensor:
    """Packed batches of different token lengths -> one tensor, zero-padded (mask 0) to the longest."""
    length = max(p.shape[1] for p in parts)
    return torch.cat([torch.nn.functional.pad(p, (0, 0, 0, length - p.shape[1])) for p in parts])


class M3Encoder(nn.Module):
    """``Encoder`` + ``M3Heads``: ``forward(texts, kind)`` -> the packed tensor (DDP wraps this module, so the heads'
    gradients are averaged over ranks with the encoder's)."""

    def __init__(self, encoder, heads: M3Heads):
        super().__init__()
        self.encoder, self.heads = encoder, heads
        self.register_buffer("unused", torch.tensor(unused_token_ids(encoder.st.tokenizer), dtype=torch.long),
                             persistent=False)

    @property
    def st(self):
        return self.encoder.st

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    def forward(self, texts: list[str], kind: str = "passage") -> torch.Tensor:
        features = self.st.preprocess(texts, max_length=self.encoder.max_length(kind))
        features = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in features.items()}
        return pack(self.st(features), self.heads, self.unused)
