"""InfoNCE with in-batch, cross-device and hard negatives, and optional score distillation.

Cross-device negatives: every rank gathers all ranks' passage embeddings with
``torch.distributed.nn.functional.all_gather``, whose backward sums the gradients of all ranks onto each
rank's own passages. Each rank's loss is the mean over its own queries, and DDP averages gradients over
ranks, so the result equals one process computing the mean loss over the concatenated global batch (a test
checks loss and gradients). Gathering without autograd and putting the local tensor back in place, as many
scripts do, drops the other ranks' gradient terms.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather(t: torch.Tensor) -> torch.Tensor:
    """All ranks' ``t`` (no gradient), concatenated in rank order."""
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t)
    return torch.cat(parts)


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    rank, world = _world()
    if world == 1:
        return t
    import warnings

    from torch.distributed.nn.functional import all_gather

    # Deprecated in recent torch in favour of private ``_functional_collectives`` functions whose names keep
    # changing; this public one still works on every torch we admit (>= 2.4), and the gloo test checks it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*all_gather is deprecated", category=FutureWarning)
        return torch.cat(all_gather(t), dim=0)


def info_nce(
    q: torch.Tensor,
    p: torch.Tensor,
    temperature: float,
    group_size: int = 1,
    cross_device: bool = True,
    teacher_scores: torch.Tensor | None = None,
    distill_weight: float = 0.0,
    distill_temperature: float = 1.0,
    stats: dict | None = None,
    filler: torch.Tensor | None = None,
) -> torch.Tensor:
    """``q``: [B, d] local queries; ``p``: [B * group_size, d] local passages, each query's group
    (positive first, then its hard negatives) contiguous. ``teacher_scores``: [B, group_size]. ``filler``:
    [B * group_size] bool, padding slots that are no passage (left out of every query's softmax). ``stats``, when
    given, receives ``accuracy``: the share of queries whose positive outscores every other passage (1.0 for
    long means the batch is too easy to teach anything)."""
    rank, world = _world()
    if cross_device and world > 1:
        p_all, offset = gather_with_grad(p), rank * p.shape[0]
        local = filler if filler is not None else torch.zeros(p.shape[0], dtype=torch.bool, device=p.device)
        filler = _gather(local.to(torch.int32)).bool()  # every rank gathers: some may be padded, others not
        filler = filler if filler.any() else None
    else:
        p_all, offset = p, 0
    scores = q @ p_all.T / temperature
    if filler is not None:
        scores = scores.masked_fill(filler[None, :], float("-inf"))
    labels = offset + torch.arange(q.shape[0], device=q.device) * group_size
    loss = F.cross_entropy(scores, labels)
    if stats is not None:
        stats["accuracy"] = float((scores.detach().argmax(dim=1) == labels).float().mean())
    if teacher_scores is not None and distill_weight > 0:
        index = labels[:, None] + torch.arange(group_size, device=q.device)[None, :]
        student = torch.gather(scores, 1, index)
        target = F.softmax(teacher_scores / distill_temperature, dim=-1)
        loss = loss + distill_weight * F.kl_div(F.log_softmax(student, dim=-1), target, reduction="batchmean")
    return loss
