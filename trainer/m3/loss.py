"""BGE-M3's training loss (the M3-Embedding paper, section 3.3).

``L = (w_d L_dense + w_s L_sparse + w_m L_multi + L_ensemble) / 4``: InfoNCE on each head's scores and on the
ensemble score ``s = w_d s_dense + w_s s_sparse + w_m s_multi`` (default weights 1, 0.3, 1). With self-knowledge
distillation, the softmax of the ensemble (no gradient) is the soft target of each head:
``L' = (w_d L'_dense + w_s L'_sparse + w_m L'_multi) / 3`` with ``L'_h = -sum softmax(s) log softmax(s_h)``, and
the loss is ``(L + L') / 2``. With fewer heads the divisors are the number of terms.

The dense term is ``losses.info_nce``: in-batch, hard and cross-device negatives, the teacher scores of mined
examples, padding slots. The sparse, multi-vector and ensemble terms score each rank's own passages (in-batch and
hard negatives), as FlagEmbedding's unified fine-tuning does: gathering token-level outputs over devices costs
far more than the dense vectors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..losses import info_nce
from .scores import all_scores, unpack


def soft_cross_entropy(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``-sum target * log_softmax(scores)``, averaged over rows; padding columns (-inf, target 0) add nothing."""
    log_p = F.log_softmax(scores, dim=-1).masked_fill(target == 0, 0.0)
    return -(target * log_p).sum(-1).mean()


def m3_loss(q: torch.Tensor, p: torch.Tensor, *, heads: tuple[str, ...], weights: tuple[float, float, float],
            temperature: float, group_size: int = 1, cross_device: bool = True, self_distill: bool = True,
            teacher_scores: torch.Tensor | None = None, distill_weight: float = 0.0, distill_temperature: float = 1.0,
            stats: dict | None = None, filler: torch.Tensor | None = None) -> torch.Tensor:
    """``q``: [B, Lq, d + 3] packed queries; ``p``: [B * group_size, Lp, d + 3] packed passages, each query's group
    contiguous (positive first). ``stats`` also receives each head's loss (``loss_dense`` ...)."""
    weight = dict(zip(("dense", "sparse", "multivector"), weights, strict=True))
    dense_loss = info_nce(unpack(q)["dense"], unpack(p)["dense"], temperature, group_size, cross_device,
                          teacher_scores, distill_weight, distill_temperature, stats, filler)
    scores = {h: s / temperature for h, s in all_scores(q, p, heads).items()}
    if filler is not None:
        scores = {h: s.masked_fill(filler[None, :], float("-inf")) for h, s in scores.items()}
    ensemble = sum(weight[h] * scores[h] for h in heads)
    labels = torch.arange(q.shape[0], device=q.device) * group_size
    losses = {h: dense_loss if h == "dense" else F.cross_entropy(scores[h], labels) for h in heads}
    losses["ensemble"] = F.cross_entropy(ensemble, labels)
    loss = (sum(weight[h] * losses[h] for h in heads) + losses["ensemble"]) / (len(heads) + 1)
    if self_distill:
        target = F.softmax(ensemble.detach(), dim=-1)
        distilled = {h: soft_cross_entropy(scores[h], target) for h in heads}
        loss = (loss + sum(weight[h] * distilled[h] for h in heads) / len(heads)) / 2
        if stats is not None:
            stats.update({f"self_distill_{h}": float(v.detach()) for h, v in distilled.items()})
    if stats is not None:
        stats.update({f"loss_{h}": float(v.detach()) for h, v in losses.items()})
        stats.update({f"accuracy_{h}": float((scores[h].detach().argmax(1) == labels).float().mean())
                      for h in heads if h != "dense"})
    return loss
