"""A retrieval task scored by each BGE-M3 head and by their hybrid, as the M3-Embedding paper evaluates them.

Pass 1 encodes the queries, then the corpus a batch at a time, keeping each query's top-k by dense and by sparse
score over the whole corpus (exact). Pass 2 encodes the candidates again, a batch at a time, and scores each
(query, candidate) pair with all three heads: multi-vector ranks the dense top-k (the paper re-ranks dense
candidates: ColBERT over a whole corpus costs queries x documents x tokens^2), and the hybrid ranks the union of
the dense and sparse top-k by ``w_d s_dense + w_s s_sparse + w_m s_multi``. Memory is one batch of passages, the
queries' outputs and their candidates' scores, at any corpus size.
"""

from __future__ import annotations

import numpy as np
import torch

from cmtp.schemas.errors import CmtpError
from cmtp.transforms.common.topk import merge_topk

from ..evaluation.metrics import ranked, retrieval_scores
from .heads import HEAD_NAMES, M3Heads, parse_heads, parse_weights
from .model import pack, pad_cat, unused_token_ids
from .scores import lexical_vectors, pair_multivector_scores, unpack

_HEADS_KEY = "_cmtp_m3_heads"  # kept in the model's __dict__: as an attribute, nn.Module would make it a submodule
# that sentence-transformers then tries to save as one of its modules


def attach_heads(st, heads: M3Heads | None) -> None:
    st.__dict__[_HEADS_KEY] = heads


def heads_of(st) -> M3Heads | None:
    return st.__dict__.get(_HEADS_KEY)


@torch.no_grad()
def packed_batches(st, heads: M3Heads, texts: list[str], prompt: str, batch_size: int,
                   max_length: int | None = None, bar=None):
    """Yields (offset, packed outputs on the CPU) of ``texts`` with ``prompt`` prepended, ``batch_size`` at a
    time (``model.py``'s layout)."""
    device = next(st.parameters()).device
    unused = torch.tensor(unused_token_ids(st.tokenizer), dtype=torch.long, device=device)
    was_training, heads_training = st.training, heads.training
    st.eval()
    heads.eval()
    try:
        for start in range(0, len(texts), batch_size):
            batch = [(prompt or "") + t for t in texts[start : start + batch_size]]
            features = st.preprocess(batch, max_length=max_length) if max_length else st.preprocess(batch)
            features = {k: v.to(device) if torch.is_tensor(v) else v for k, v in features.items()}
            yield start, pack(st(features), heads.to(device), unused).cpu()
            if bar is not None:
                bar.update(len(batch))
    finally:
        st.train(was_training)
        heads.train(heads_training)


def lexical_rows(packed: torch.Tensor, vocabulary: int):
    """A scipy CSR matrix [texts, vocabulary] of each text's largest lexical weight per token."""
    from scipy import sparse

    u = unpack(packed)
    ids, weights = u["ids"].numpy(), u["weights"].numpy()
    rows, cols, vals = [], [], []
    for r in range(len(ids)):
        keep = weights[r] > 0
        if not keep.any():
            continue
        uniq, inverse = np.unique(ids[r][keep], return_inverse=True)
        best = np.zeros(len(uniq), np.float32)
        np.maximum.at(best, inverse, weights[r][keep])
        rows.append(np.full(len(uniq), r))
        cols.append(uniq)
        vals.append(best)
    if not rows:
        return sparse.csr_matrix((len(ids), vocabulary), dtype=np.float32)
    return sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(len(ids), vocabulary), dtype=np.float32)


def _ranked(qids, doc_ids, scores, index) -> dict:
    return {qid: ranked([doc_ids[j] for j in row[row >= 0]], s[row >= 0])
            for qid, s, row in zip(qids, scores, index, strict=True)}


def m3_retrieval(st, data: dict, prompts: dict, options, bar=None) -> dict[str, float]:
    """Metrics of each head: dense under the usual names (``ndcg_at_10`` ...), the others prefixed
    (``sparse_ndcg_at_10``, ``multivector_...``, ``hybrid_...``). ``options``: ``top_k``, ``batch_size``,
    ``max_seq_length``, ``heads``, ``head_weights``."""
    heads = heads_of(st)
    if heads is None:
        raise CmtpError("this model has no BGE-M3 heads (sparse_linear.pt and colbert_linear.pt beside its weights): "
                        "evaluate it with --heads dense, or train it with --heads dense,sparse,multivector")
    chosen = parse_heads(options.heads)
    weight = dict(zip(HEAD_NAMES, parse_weights(options.head_weights), strict=True))
    weight = {h: (w if h in chosen else 0.0) for h, w in weight.items()}
    vocabulary = max(len(st.tokenizer), int(st.tokenizer.vocab_size))

    def batches(texts, prompt):
        return packed_batches(st, heads, texts, prompt, options.batch_size, options.max_seq_length, bar)

    qids, doc_ids = list(data["queries"]), list(data["corpus"])
    queries = pad_cat([b for _, b in batches([data["queries"][q] for q in qids], prompts["query"])])
    uq, q_lex = unpack(queries), lexical_rows(queries, vocabulary)
    k = min(options.top_k, len(doc_ids))
    empty = (np.full((len(qids), 0), -np.inf, np.float32), np.zeros((len(qids), 0), np.int64))
    best = {"dense": empty, "sparse": empty} if "sparse" in chosen else {"dense": empty}
    for start, docs in batches([data["corpus"][d] for d in doc_ids], prompts["passage"]):  # pass 1: top-k
        offsets = np.arange(start, start + len(docs))
        for name in best:
            scores = (uq["dense"] @ unpack(docs)["dense"].T).numpy() if name == "dense" else \
                (q_lex @ lexical_rows(docs, vocabulary).T).toarray()
            top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            best[name] = merge_topk([best[name][0], np.take_along_axis(scores, top, 1).astype(np.float32)],
                                    [best[name][1], offsets[top]], k)
    out = retrieval_scores(_ranked(qids, doc_ids, *best["dense"]), data["qrels"])
    if chosen == ("dense",):
        return out
    if "sparse" in chosen:
        out.update({f"sparse_{m}": v for m, v in retrieval_scores(_ranked(qids, doc_ids, *best["sparse"]),
                                                                           data["qrels"]).items()})
    candidates = np.concatenate([found[1] for found in best.values()], axis=1)
    pairs = sorted({(qi, int(d)) for qi in range(len(qids)) for d in candidates[qi] if d >= 0},
                   key=lambda p: (p[1], p[0]))
    if bar is not None:  # pass 2 encodes the candidates again
        bar.extend(len({d for _, d in pairs}))
    pair_scores = _score_pairs(pairs, queries, [data["corpus"][d] for d in doc_ids], prompts["passage"], batches)
    runs = {"hybrid": {}}
    for (qi, d), values in pair_scores.items():
        runs["hybrid"].setdefault(qi, []).append((d, sum(weight[h] * v for h, v in zip(HEAD_NAMES, values,
                                                                                        strict=True))))
    if "multivector" in chosen:  # re-ranks the dense top-k
        runs["multivector"] = {qi: [(int(d), pair_scores[(qi, int(d))][2]) for d in best["dense"][1][qi] if d >= 0]
                               for qi in range(len(qids))}
    for name, run in runs.items():
        ordered = {qids[qi]: ranked([doc_ids[d] for d, _ in items], np.array([s for _, s in items]))
                   for qi, items in run.items()}
        out.update({f"{name}_{m}": v for m, v in retrieval_scores(ordered, data["qrels"]).items()})
    return out


def _score_pairs(pairs: list[tuple[int, int]], queries: torch.Tensor, texts: list[str], prompt: str,
                 batches) -> dict:
    """(query index, document index) -> (dense, sparse, multi-vector) score; the candidate documents encoded a
    batch at a time."""
    out = {}
    documents = sorted({d for _, d in pairs})
    by_document: dict[int, list[int]] = {}
    for qi, d in pairs:
        by_document.setdefault(d, []).append(qi)
    for start, docs in batches([texts[d] for d in documents], prompt):
        part = [(qi, d, start + i) for i, d in enumerate(documents[start : start + len(docs)])
                for qi in by_document[d]]
        for s in range(0, len(part), 256):
            chunk = part[s : s + 256]
            q = unpack(queries[[qi for qi, _, _ in chunk]])
            p = unpack(docs[[row - start for _, _, row in chunk]])
            dense = (q["dense"] * p["dense"]).sum(1)
            lq, lp = lexical_vectors([q["ids"], p["ids"]], [q["weights"], p["weights"]])
            lexical = (lq * lp).sum(1)
            multi = pair_multivector_scores(q, p)
            for (qi, d, _), values in zip(chunk, zip(dense.tolist(), lexical.tolist(), multi.tolist(), strict=True),
                                          strict=True):
                out[(qi, d)] = values
    return out
