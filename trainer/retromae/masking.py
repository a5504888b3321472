"""Masks for RetroMAE, built for the whole batch at once with tensor operations (on the training device).

Randomness is keyed by row: the word and token draws are hashes of (row seed, position, salt), computed with
tensor operations for the whole batch, and the decoder's L x L matrix comes from a generator seeded by the row
seed; the row seed comes from the row's id, the step and the run seed. So a row gets the same masks whichever
rank, batch slice or resumed run processes it (a 2-process run equals one process on the whole batch; kill and
resume is exact), and nothing loops over positions in Python.

Whole-word masking: the words are jieba's segmentation of the text, mapped onto tokens through the fast
tokenizer's character offsets, so all tokens of a chosen word are masked together (WordPiece ``##`` rules do
not apply to Chinese, where every character is its own piece). ``--per-token-masking`` treats each token as a
word.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cmtp.transforms.common.ids import stable_id

_K1, _K2, _K3, _K4 = 0x632BE59BD9B4E019, 0x1B87359354D2A7B1, 0x2545F4914F6CDD1D, 0x1F3D5B79
_M1 = 0x7FB5D329728EA185
_M2 = 0x81DADEF4BC2DD44D - (1 << 64)  # as a signed 64-bit constant


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A splitmix64-style finaliser on int64 (multiplications wrap around, shifts are arithmetic: still a
    deterministic, well-mixed function of the input on every device)."""
    x = x ^ (x >> 31)
    x = x * _M1
    x = x ^ (x >> 27)
    x = x * _M2
    return x ^ (x >> 33)


def uniform(row_seeds: torch.Tensor, salt: int, *indices: torch.Tensor) -> torch.Tensor:
    """Uniform [0, 1) floats, one per element of the broadcast of ``row_seeds`` [B, 1, ...] and ``indices``: one
    finaliser over a linear combination of (seed, salt, indices); the seeds are already random 62-bit numbers."""
    x = row_seeds * _K1 + salt * _K4
    for k, index in zip((_K2, _K3), indices, strict=False):
        x = x + index.to(torch.int64) * k
    x = _mix(x)
    return ((x >> 8) & ((1 << 52) - 1)).to(torch.float64).div_(float(1 << 52)).to(torch.float32)


def row_seeds(ids: list[str], step: int, seed: int, device: torch.device) -> torch.Tensor:
    """One 62-bit seed per row from its id, the step and the run seed."""
    return torch.tensor([int(stable_id(str(seed), str(step), str(i)), 16) & ((1 << 62) - 1) for i in ids],
                        dtype=torch.int64, device=device)


@dataclass
class EncodedBatch:
    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    word_ids: torch.Tensor  # [B, L]: word index of each token, -1 for special tokens and padding
    max_length: int = 0  # the tokenizer's cut: random draws are made at this size, so they do not depend on L


class WordAligner:
    """Tokenises texts and maps every token to its jieba word (or to itself with ``whole_word=False``)."""

    def __init__(self, tokenizer, max_length: int, whole_word: bool = True):
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("whole-word masking needs a fast tokenizer (character offsets)")
        self.tokenizer, self.max_length, self.whole_word = tokenizer, max_length, whole_word
        if whole_word:
            import logging

            import jieba

            jieba.setLogLevel(logging.WARNING)
            self._cut = jieba.tokenize

    def word_starts(self, text: str) -> np.ndarray:
        return np.array([start for _, start, _ in self._cut(text)], dtype=np.int64)

    def __call__(self, texts: list[str]) -> EncodedBatch:
        enc = self.tokenizer(texts, max_length=self.max_length, truncation=True, padding=True,
                             return_offsets_mapping=True, return_special_tokens_mask=True, return_tensors="np")
        offsets, special = enc["offset_mapping"], enc["special_tokens_mask"].astype(bool)
        real = enc["attention_mask"].astype(bool) & ~special & (offsets[:, :, 1] > offsets[:, :, 0])
        word_ids = np.full(real.shape, -1, dtype=np.int64)
        for row, text in enumerate(texts):
            positions = np.flatnonzero(real[row])
            if not len(positions):
                continue
            if self.whole_word:
                # the word holding a token's first character (jieba's spans cover the whole text), renumbered
                # 0..n-1: a token spanning several words (sentencepiece pieces can) joins them into one unit
                words = np.searchsorted(self.word_starts(text), offsets[row, positions, 0], side="right") - 1
                word_ids[row, positions] = np.unique(words, return_inverse=True)[1].reshape(-1)
            else:
                word_ids[row, positions] = np.arange(len(positions))
        return EncodedBatch(torch.from_numpy(enc["input_ids"]), torch.from_numpy(enc["attention_mask"]),
                            torch.from_numpy(word_ids), self.max_length)


def choose_masked_tokens(word_ids: torch.Tensor, seeds: torch.Tensor, ratio: float, salt: int) -> torch.Tensor:
    """[B, L] bool: the tokens of round(ratio x words) randomly chosen words per row (at least one word)."""
    n_words = (word_ids.max(dim=1).values + 1).clamp(min=0)  # words are numbered 0..n-1 in order
    width = int(n_words.max().item()) if len(n_words) else 0
    if width == 0:
        return torch.zeros_like(word_ids, dtype=torch.bool)
    index = torch.arange(width, device=word_ids.device)
    scores = uniform(seeds[:, None], salt, index[None, :])
    scores = scores.masked_fill(index[None, :] >= n_words[:, None], float("inf"))
    rank = scores.argsort(dim=1).argsort(dim=1)  # the rank of each word's score within its row
    k = torch.clamp((n_words.to(torch.float32) * ratio).round().to(torch.int64), min=1)
    chosen_words = (rank < k[:, None]) & (index[None, :] < n_words[:, None])
    return chosen_words.gather(1, word_ids.clamp(min=0)) & (word_ids >= 0)


def mlm_inputs(batch: EncodedBatch, seeds: torch.Tensor, ratio: float, mask_token_id: int, vocab_size: int,
               salt: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT-style corruption of the chosen tokens (80% the mask token, 10% a random token, 10% kept) and the
    labels (the original id where chosen, -100 elsewhere)."""
    chosen = choose_masked_tokens(batch.word_ids, seeds, ratio, salt)
    positions = torch.arange(batch.input_ids.shape[1], device=batch.input_ids.device)[None, :]
    u = uniform(seeds[:, None], salt + 1, positions)
    random_ids = (uniform(seeds[:, None], salt + 2, positions) * vocab_size).to(torch.int64).clamp(max=vocab_size - 1)
    inputs = torch.where(chosen & (u < 0.8), torch.full_like(batch.input_ids, mask_token_id), batch.input_ids)
    inputs = torch.where(chosen & (u >= 0.8) & (u < 0.9), random_ids, inputs)
    labels = torch.where(chosen, batch.input_ids, torch.full_like(batch.input_ids, -100))
    return inputs, labels


def decoder_visibility(attention_mask: torch.Tensor, seeds: torch.Tensor, ratio: float, salt: int = 7,
                       size: int = 0) -> torch.Tensor:
    """[B, L, L] bool, True where query position i may attend key position j: RetroMAE's enhanced decoding.
    Position 0 holds the sentence embedding and is always visible; every other real position is visible to i with
    probability 1 - ratio, never i itself, never padding.

    The L x L random matrix of a row comes from one generator call seeded by the row's seed (hashing 4M
    (row, i, j) triples with integer tensor operations cost 0.4 s per batch of 64 x 256; this costs 0.03 s): the
    batch is one loop of B generator calls, no Python work per position, and a row's matrix still depends on its
    seed alone: the draw is ``size`` x ``size`` (the tokenizer's cut), of which the batch's L x L corner is used, so
    padding a row to another batch's length does not change it."""
    batch, length = attention_mask.shape
    size = max(size, length)
    device = attention_mask.device
    u = torch.empty(batch, size, size, device=device)
    generator = torch.Generator(device=device)
    for row, seed in enumerate((seeds ^ salt).tolist()):
        generator.manual_seed(seed)
        torch.rand(size, size, generator=generator, device=device, out=u[row])
    visible = u[:, :length, :length] >= ratio
    visible &= attention_mask.bool()[:, None, :]
    visible.diagonal(dim1=1, dim2=2).fill_(False)
    visible[:, :, 0] = True
    return visible
