"""Gradient caching (Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup",
2021): embed the batch in chunks without a graph, compute the loss on the full batch of embeddings, then
re-embed chunk by chunk with a graph and back-propagate each chunk's slice of the embedding gradient.

Peak memory is that of one chunk, while the gradients equal those of the whole batch at once. Dropout is
kept identical between the two passes by replaying each chunk's random state (``RandContext``). Under DDP,
only the last chunk's backward synchronises gradients. Written here because sentence-transformers' cached
losses do not compose with our cross-device loss and streaming loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch


class RandContext:
    """Captures the CPU and CUDA random state now, and restores it inside ``with``."""

    def __init__(self, device: torch.device):
        self.cpu = torch.get_rng_state()
        self.device = device
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def __enter__(self):
        self._fork = torch.random.fork_rng(devices=[self.device] if self.cuda is not None else [])
        self._fork.__enter__()
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)

    def __exit__(self, *exc):
        self._fork.__exit__(*exc)


KINDS = {"q": "query", "p": "passage"}


def _join(parts: list[torch.Tensor]) -> torch.Tensor:
    """Chunks' outputs in one tensor: embeddings [n, d] as they are; token-level outputs [n, L, c] (BGE-M3's packed
    tensor, ``m3/model.py``) zero-padded to the longest chunk's L, padding being mask 0."""
    if parts[0].dim() == 2:
        return torch.cat(parts)
    from .m3.model import pad_cat

    return pad_cat(parts)


def _chunks(texts: list[str], size: int) -> list[list[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def cached_backward(
    encoder: torch.nn.Module,
    queries: list[str],
    passages: list[str],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    chunk_size: int,
    device: torch.device,
    scaler: torch.amp.GradScaler | None = None,
) -> torch.Tensor:
    """Loss of the whole batch, with gradients accumulated into ``encoder`` chunk by chunk. With a ``scaler``
    (fp16), the loss is scaled before the first backward, so the embedding gradients replayed through each
    chunk, and hence the parameter gradients, carry the scale that ``scaler.unscale_`` later divides out."""
    parts, states = {}, {}
    with torch.no_grad():
        for name, texts in [("q", queries), ("p", passages)]:
            parts[name], states[name] = [], []
            for chunk in _chunks(texts, chunk_size):
                states[name].append(RandContext(device))
                parts[name].append(encoder(chunk, KINDS[name]))
    q = _join(parts["q"]).detach().requires_grad_()
    p = _join(parts["p"]).detach().requires_grad_()
    loss = loss_fn(q, p)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    grads = {"q": q.grad.split([len(c) for c in _chunks(queries, chunk_size)]),
             "p": p.grad.split([len(c) for c in _chunks(passages, chunk_size)])}
    work = [(name, chunk, state, grad) for name, texts in [("q", queries), ("p", passages)]
            for chunk, state, grad in zip(_chunks(texts, chunk_size), states[name], grads[name], strict=True)]
    no_sync = getattr(encoder, "no_sync", None)
    for i, (name, chunk, state, grad) in enumerate(work):
        sync = i == len(work) - 1 or no_sync is None
        with (contextlib.nullcontext() if sync else no_sync()), state:
            reps = encoder(chunk, KINDS[name])
            if reps.dim() == 3:  # the chunk's own token length (the joined tensor was padded to the longest)
                grad = grad[:, : reps.shape[1]]
            torch.dot(reps.flatten(), grad.flatten()).backward()
    return loss.detach()
