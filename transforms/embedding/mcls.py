"""MCLS, multiple [CLS] (the M3-Embedding paper, arXiv 2402.03216, section 3.4): a dense vector for a long text
from a model that was not trained on long texts. A [CLS] token is put before every ``every`` tokens of the text,
and the mean of their last hidden states, normalised, is the text's vector. The paper's models pool the [CLS]
state, so a text of at most ``every`` tokens has one [CLS] and its usual vector; here such a text keeps the
model's own pooling (mean pooling for e5), and only longer texts are encoded this way.

Written here because sentence-transformers pools one sequence as it is; MCLS changes the sequence (inserted
tokens) and pools selected positions. The transformer runs through sentence-transformers' own first module, so
every engine (torch, ONNX) and device serves it as it serves ``encode``.
"""

from __future__ import annotations

import numpy as np

from cmtp.schemas.errors import CmtpError

from .encode import encode


def with_cls_tokens(tokens: list[int], every: int, limit: int, cls: int, eos: int) -> tuple[list[int], list[int]]:
    """``[CLS] t1..tN [CLS] tN+1..t2N ... [EOS]`` cut to ``limit`` tokens in all, and the [CLS] positions. The text
    is cut at the longest prefix that fits with its [CLS] tokens and the closing [EOS]."""
    keep = min(len(tokens), limit)
    while keep + -(-keep // every) + 1 > limit:
        keep -= 1
    sequence, positions = [], []
    for start in range(0, keep, every):
        positions.append(len(sequence))
        sequence += [cls] + tokens[start : min(start + every, keep)]
    return sequence + [eos], positions


def check_mcls_model(model) -> None:
    """MCLS reads the transformer's states: a model with layers after its pooling (a Dense projection) would give
    vectors of another space."""
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    extra = [type(m).__name__ for m in list(model._modules.values())[1:] if not isinstance(m, Pooling | Normalize)]
    if extra:
        raise CmtpError(f"MCLS averages the transformer's [CLS] states; this model has {', '.join(extra)} after its "
                        "pooling, whose output MCLS cannot give: evaluate it without --mcls")
    tokenizer = model.tokenizer
    if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
        raise CmtpError("MCLS inserts the tokenizer's [CLS] token; this model's tokenizer has none")


def encode_mcls(model, texts: list[str], prompt: str, batch_size: int, every: int,
                max_length: int | None = None, on_done=None) -> np.ndarray:
    """Normalised float32 vectors: texts longer than ``every`` tokens (with the prompt) by MCLS, the others by
    ``encode``. ``max_length`` as in ``encode`` (None: the model's ``max_seq_length``). ``on_done(n)`` is told
    of every n texts encoded (a progress bar)."""
    import torch

    check_mcls_model(model)
    tokenizer = model.tokenizer
    limit = min(max_length or model.max_seq_length, model.max_seq_length)
    ids = tokenizer([(prompt or "") + t for t in texts], add_special_tokens=False)["input_ids"]
    long = [i for i, tokens in enumerate(ids) if len(tokens) > every]
    short = [i for i, tokens in enumerate(ids) if len(tokens) <= every]
    out = np.zeros((len(texts), model.get_embedding_dimension()), dtype=np.float32)
    if short:
        out[short] = encode(model, [texts[i] for i in short], prompt, batch_size, max_length=max_length)
        if on_done:
            on_done(len(short))
    built = {i: with_cls_tokens(ids[i], every, limit, tokenizer.cls_token_id, tokenizer.sep_token_id) for i in long}
    order = sorted(long, key=lambda i: len(built[i][0]))  # batches of similar length pad less
    transformer = model[0]
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        width = max(len(built[i][0]) for i in batch)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            sequence = built[i][0]
            input_ids[row, : len(sequence)] = torch.tensor(sequence)
            mask[row, : len(sequence)] = 1
        with torch.inference_mode():
            hidden = transformer({"input_ids": input_ids.to(model.device),
                                  "attention_mask": mask.to(model.device)})["token_embeddings"].float()
        for row, i in enumerate(batch):
            vector = hidden[row, built[i][1]].mean(dim=0)
            out[i] = torch.nn.functional.normalize(vector, dim=0).cpu().numpy()
        if on_done:
            on_done(len(batch))
    return out
