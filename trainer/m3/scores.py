"""The three BGE-M3 scores between packed query and passage tensors (``model.py``), for training and evaluation.

- dense: the inner product of the normalised vectors;
- sparse: ``sum over tokens t in both texts of w_q(t) * w_p(t)``, a token's weight being its largest over its
  occurrences in the text (FlagEmbedding's ``scatter_reduce(amax)`` and ``compute_lexical_matching_score``);
- multi-vector: ColBERT's late interaction, the mean over the query's real tokens of the best inner product with
  any real passage token.

Sparse is computed over the token ids present in the batch, not over the vocabulary: FlagEmbedding builds a
``[texts, vocabulary]`` tensor (250k columns for XLM-R, 0.5 GB for 512 passages), the same products on a few
thousand columns here.
"""

from __future__ import annotations

import torch


def unpack(x: torch.Tensor) -> dict[str, torch.Tensor]:
    d = x.shape[-1] - 3
    return {"dense": x[:, 0, :d], "colbert": x[:, 1:, :d], "colbert_mask": x[:, 1:, d + 2] > 0,
            "weights": x[:, :, d], "ids": x[:, :, d + 1].round().long()}


def dense_scores(q: dict, p: dict) -> torch.Tensor:
    return q["dense"] @ p["dense"].T


def lexical_vectors(ids_list: list[torch.Tensor], weights_list: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each text's largest weight per token, over the tokens present in all the given batches: [B_i, U] each."""
    flat = torch.cat([ids.reshape(-1) for ids in ids_list])
    vocabulary, inverse = torch.unique(flat, return_inverse=True)
    out, start = [], 0
    for ids, weights in zip(ids_list, weights_list, strict=True):
        index = inverse[start : start + ids.numel()].reshape(ids.shape)
        start += ids.numel()
        zeros = weights.new_zeros(ids.shape[0], len(vocabulary))
        out.append(zeros.scatter_reduce(1, index, weights, reduce="amax", include_self=True))
    return out


def sparse_scores(q: dict, p: dict) -> torch.Tensor:
    lq, lp = lexical_vectors([q["ids"], p["ids"]], [q["weights"], p["weights"]])
    return lq @ lp.T


def multivector_scores(q: dict, p: dict, chunk: int = 64) -> torch.Tensor:
    """[Bq, Bp]; passages ``chunk`` at a time (memory Bq x Lq x chunk x Lp)."""
    qv, qm = q["colbert"], q["colbert_mask"].to(q["colbert"].dtype)
    count = qm.sum(1).clamp_min(1)
    parts = []
    for start in range(0, p["colbert"].shape[0], chunk):
        pv, pm = p["colbert"][start : start + chunk], p["colbert_mask"][start : start + chunk]
        token = torch.einsum("qid,pjd->qipj", qv, pv)
        token = token.masked_fill(~pm[None, None, :, :], float("-inf"))
        best = token.max(-1).values.clamp_min(-1.0)  # a passage with no real token (padding slot): -1
        parts.append((best * qm[:, :, None]).sum(1) / count[:, None])
    return torch.cat(parts, dim=1)


def pair_multivector_scores(q: dict, p: dict) -> torch.Tensor:
    """[B]: query i against passage i only (evaluation's candidate pairs)."""
    token = torch.einsum("bid,bjd->bij", q["colbert"], p["colbert"])
    token = token.masked_fill(~p["colbert_mask"][:, None, :], float("-inf"))
    best = token.max(-1).values.clamp_min(-1.0)
    qm = q["colbert_mask"].to(best.dtype)
    return (best * qm).sum(1) / qm.sum(1).clamp_min(1)


SCORERS = {"dense": dense_scores, "sparse": sparse_scores, "multivector": multivector_scores}


def all_scores(q: torch.Tensor, p: torch.Tensor, heads: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Each head's [Bq, Bp] score matrix between packed ``q`` and ``p``."""
    uq, up = unpack(q), unpack(p)
    return {head: SCORERS[head](uq, up) for head in heads}
