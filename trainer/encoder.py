"""The encoder being trained: a sentence-transformers model from the registry, as a torch module that maps
texts to normalised embeddings (CLS or mean pooling)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def load_encoder(name: str, pooling: str | None = None, max_seq_length: int | None = None,
                 device: str = "cpu", allow_network: bool = False, gradient_checkpointing: bool = False):
    """A SentenceTransformer ready for training; ``pooling`` ("cls" / "mean") replaces the model's pooling."""
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    from cmtp.transforms.embedding import load_sentence_transformer, set_max_seq_length

    model = load_sentence_transformer(name, device=device, allow_network=allow_network)
    if max_seq_length:
        set_max_seq_length(model, max_seq_length)
    if pooling:
        dim = model.get_embedding_dimension()
        modules = [m for m in model._modules.values()]
        kept = [modules[0], Pooling(dim, pooling_mode=pooling)] + [m for m in modules[1:]
                                                                   if not isinstance(m, (Pooling, Normalize))]
        for key in list(model._modules):
            del model._modules[key]
        for i, module in enumerate(kept + [Normalize()]):
            model._modules[str(i)] = module
        model.to(device)
    if gradient_checkpointing:
        auto = model[0].auto_model
        # transformers 5 renamed it; 4.x only has the old name
        (getattr(auto, "activation_checkpointing_enable", None) or auto.gradient_checkpointing_enable)()
    return model


class Encoder(nn.Module):
    """texts -> L2-normalised embeddings, through the wrapped SentenceTransformer (so DDP can wrap this).
    Passages are truncated at ``passage_max_len`` tokens, queries at ``query_max_len``, neither above the model's
    ``max_seq_length``; the lengths go with each call, so the shared model is never changed (and saves as it
    was loaded)."""

    def __init__(self, st_model, query_max_len: int | None = None, passage_max_len: int | None = None):
        super().__init__()
        self.st = st_model
        self.query_max_len, self.passage_max_len = query_max_len, passage_max_len

    def max_length(self, kind: str = "passage") -> int | None:
        """Where ``kind`` texts are cut: their length, never above the model's limit (None: the limit)."""
        limit = self.st.max_seq_length
        wanted = (self.query_max_len if kind == "query" else self.passage_max_len) or limit
        return min(wanted, limit) if limit else wanted

    @property
    def device(self) -> torch.device:
        return next(self.st.parameters()).device

    def forward(self, texts: list[str], kind: str = "passage") -> torch.Tensor:
        features = self.st.preprocess(texts, max_length=self.max_length(kind))
        features = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in features.items()}
        return F.normalize(self.st(features)["sentence_embedding"], dim=-1)
