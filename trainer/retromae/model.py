"""The RetroMAE model: the encoder being pretrained (a sentence-transformers model from the registry), an MLM
head tied to its input embeddings, and the one-layer enhanced decoder.

Encoder: the text with whole words masked at ``encoder_mask_ratio`` (BERT's 80/10/10) -> MLM loss on the masked
tokens, and the sentence embedding (the model's pooling: CLS or mean) of that same pass.
Decoder (enhanced decoding): the query stream is the sentence embedding broadcast to every position plus
position embeddings; keys and values are [sentence embedding; the embeddings of the original tokens]; query
position i sees the sentence embedding and a random ``1 - decoder_mask_ratio`` of the other positions, never
itself, and must reconstruct token i. Both losses are means over the tokens of the global batch (under DDP the
token counts are summed over ranks, so the loss and gradients equal one process on the whole batch).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .masking import EncodedBatch, decoder_visibility, mlm_inputs

log = logging.getLogger(__name__)

# where known architectures keep their MLM head, by checkpoint key prefix
_HEAD_KEYS = {
    "lm_head.": {"dense.weight": "dense.weight", "dense.bias": "dense.bias", "layer_norm.weight": "norm.weight",
                 "layer_norm.bias": "norm.bias", "bias": "bias"},
    "cls.predictions.": {"transform.dense.weight": "dense.weight", "transform.dense.bias": "dense.bias",
                         "transform.LayerNorm.weight": "norm.weight", "transform.LayerNorm.bias": "norm.bias",
                         "bias": "bias"},
}


class MLMHead(nn.Module):
    """dense -> GELU -> LayerNorm -> the input embedding table (tied) + bias."""

    def __init__(self, hidden: int, embeddings: nn.Embedding, eps: float = 1e-12):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.embeddings = embeddings
        self.bias = nn.Parameter(torch.zeros(embeddings.num_embeddings))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(F.gelu(self.dense(hidden))), self.embeddings.weight, self.bias)

    def load_from_checkpoint(self, model_dir: Path) -> str | None:
        """Load a pretrained MLM head from the model's weight files when they have one; returns its prefix."""
        from safetensors import safe_open

        for path in sorted(Path(model_dir).rglob("*.safetensors")):
            with safe_open(str(path), "pt") as f:
                keys = set(f.keys())
                for prefix, mapping in _HEAD_KEYS.items():
                    if all(prefix + k in keys for k in mapping):
                        self.load_state_dict({v: f.get_tensor(prefix + k) for k, v in mapping.items()}, strict=False)
                        return prefix
        return None


class EnhancedDecoder(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int, max_positions: int, eps: float,
                 dropout: float):
        super().__init__()
        self.heads = heads
        self.position = nn.Embedding(max_positions, hidden)
        self.query_norm = nn.LayerNorm(hidden, eps=eps)
        self.attention = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.attention_norm = nn.LayerNorm(hidden, eps=eps)
        self.ffn = nn.Sequential(nn.Linear(hidden, intermediate), nn.GELU(), nn.Linear(intermediate, hidden),
                                 nn.Dropout(dropout))
        self.ffn_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, sentence: torch.Tensor, tokens: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        positions = torch.arange(length, device=tokens.device)
        query = self.query_norm(sentence[:, None, :] + self.position(positions)[None])
        keys = torch.cat([sentence[:, None, :], tokens[:, 1:]], dim=1)
        blocked = (~visible).repeat_interleave(self.heads, dim=0)  # [B * heads, L, L], True = may not attend
        attended, _ = self.attention(query, keys, keys, attn_mask=blocked, need_weights=False)
        hidden = self.attention_norm(query + self.dropout(attended))
        return self.ffn_norm(hidden + self.ffn(hidden))


def chunked_cross_entropy(head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor, chunk: int = 512
                          ) -> torch.Tensor:
    """Summed cross-entropy of ``head(hidden)`` against ``labels``, ``chunk`` rows of logits at a time, each chunk
    recomputed in the backward pass: with a 250k-token vocabulary (multilingual models) the logits of a batch
    would otherwise take gigabytes (16 x 128 tokens: 2 GB, plus their gradient)."""
    from torch.utils.checkpoint import checkpoint

    total = hidden.new_zeros(())
    for start in range(0, len(labels), chunk):
        h, y = hidden[start : start + chunk], labels[start : start + chunk]
        total = total + checkpoint(lambda h, y: F.cross_entropy(head(h), y, reduction="sum"), h, y,
                                   use_reentrant=False)
    return total


def _pooling_mode(st) -> str:
    for module in st:
        mode = getattr(module, "pooling_mode", None)
        if mode is not None:
            mode = mode if isinstance(mode, str) else mode[0]
            return "cls" if "cls" in str(mode) else "mean"
    return "mean"


class RetroMAE(nn.Module):
    def __init__(self, st, encoder_mask_ratio: float = 0.3, decoder_mask_ratio: float = 0.5,
                 model_dir: Path | None = None):
        super().__init__()
        self.st = st
        self.encoder = st[0].auto_model
        config = self.encoder.config
        self.encoder_mask_ratio, self.decoder_mask_ratio = encoder_mask_ratio, decoder_mask_ratio
        self.pooling = _pooling_mode(st)
        eps = getattr(config, "layer_norm_eps", 1e-12)
        self.head = MLMHead(config.hidden_size, self.encoder.get_input_embeddings(), eps)
        loaded = self.head.load_from_checkpoint(model_dir) if model_dir else None
        if not loaded:
            log.warning("%s has no MLM head: a new one, tied to the input embeddings, is trained", model_dir)
        self.decoder = EnhancedDecoder(config.hidden_size, config.num_attention_heads, config.intermediate_size,
                                       config.max_position_embeddings, eps, config.hidden_dropout_prob)
        tokenizer = st.tokenizer
        self.mask_token_id, self.vocab_size = tokenizer.mask_token_id, config.vocab_size
        if self.mask_token_id is None:
            raise ValueError("the tokenizer has no mask token: RetroMAE needs one")

    def heads_state(self) -> dict:
        """The weights that are not the encoder's (saved in checkpoints, not in the exported model)."""
        return {"head": {k: v for k, v in self.head.state_dict().items() if not k.startswith("embeddings.")},
                "decoder": self.decoder.state_dict()}

    def load_heads(self, state: dict) -> None:
        self.head.load_state_dict(state["head"], strict=False)
        self.decoder.load_state_dict(state["decoder"])

    def _sentence(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = attention_mask.to(hidden.dtype)[:, :, None]
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)

    def forward(self, batch: EncodedBatch, seeds: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(loss, stats): the loss is (encoder CE sum / encoder tokens + decoder CE sum / decoder tokens) over the
        global batch, times the world size (DDP averages gradients over ranks)."""
        inputs, labels = mlm_inputs(batch, seeds, self.encoder_mask_ratio, self.mask_token_id, self.vocab_size)
        hidden = self.encoder(input_ids=inputs, attention_mask=batch.attention_mask).last_hidden_state
        enc_rows = labels != -100
        enc_sum = chunked_cross_entropy(self.head, hidden[enc_rows], labels[enc_rows])
        sentence = self._sentence(hidden, batch.attention_mask)
        tokens = self.encoder.embeddings(input_ids=batch.input_ids)
        visible = decoder_visibility(batch.attention_mask, seeds, self.decoder_mask_ratio, size=batch.max_length)
        decoded = self.decoder(sentence, tokens, visible)
        dec_rows = batch.word_ids >= 0  # every real token is reconstructed
        dec_sum = chunked_cross_entropy(self.head, decoded[dec_rows], batch.input_ids[dec_rows])
        counts = torch.tensor([float(enc_rows.sum()), float(dec_rows.sum())], device=hidden.device)
        world = 1
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
            world = dist.get_world_size()
        enc_loss = enc_sum / counts[0].clamp(min=1)
        dec_loss = dec_sum / counts[1].clamp(min=1)
        stats = {"encoder_loss": float(enc_loss.detach()) * world, "decoder_loss": float(dec_loss.detach()) * world}
        return (enc_loss + dec_loss) * world, stats
