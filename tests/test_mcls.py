"""MCLS: the [CLS]-inserted sequence, its vectors against the transformer's own states, and its place in cmtp eval."""

from pathlib import Path

import numpy as np
import pytest
import torch

from cmtp.schemas.errors import CmtpError
from cmtp.trainer.evaluation.runner import EvalOptions
from cmtp.transforms.embedding import encode, load_embedding_model
from cmtp.transforms.embedding.mcls import encode_mcls, with_cls_tokens
from tests.numerics import assert_float32_close

RAW = Path(__file__).parent / "data" / "raw"
ROOT = Path(__file__).resolve().parents[1]
C, E = -1, -2


def test_a_cls_before_every_n_tokens_and_the_text_cut_to_fit():
    sequence, positions = with_cls_tokens(list(range(10)), 4, 100, C, E)
    assert sequence == [C, 0, 1, 2, 3, C, 4, 5, 6, 7, C, 8, 9, E] and positions == [0, 5, 10]
    # 8 tokens in all: 5 text tokens, their 2 [CLS] and the [EOS]
    sequence, positions = with_cls_tokens(list(range(10)), 4, 8, C, E)
    assert sequence == [C, 0, 1, 2, 3, C, 4, E] and positions == [0, 5]
    assert with_cls_tokens(list(range(4)), 4, 8, C, E) == ([C, 0, 1, 2, 3, E], [0])


def _long_texts(n: int) -> list[str]:
    lines = (RAW / "csl" / "clge_csl_val_head20.tsv").read_text(encoding="utf-8").splitlines()
    return [line.split("\t")[-1] for line in lines[:n]]


def test_long_texts_average_their_cls_states_and_short_ones_keep_the_model_pooling(tiny_model_path):
    model = load_embedding_model(str(tiny_model_path), device="cpu")
    tokenizer = model.tokenizer
    texts = _long_texts(5) + ["短文本", "长江"]
    every = 16
    got = encode_mcls(model, texts, "", batch_size=3, every=every)
    assert got.shape == (7, model.get_embedding_dimension()) and got.dtype == np.float32
    # short texts: the model's own (mean-pooled) vectors
    assert_float32_close(got[5:], encode(model, texts[5:], "", 8), terms=128, what="short texts")
    # long texts: each alone through the transformer, the mean of the states at its [CLS] positions
    limit = model.max_seq_length
    for i, text in enumerate(texts[:5]):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(ids) > every
        sequence, positions = with_cls_tokens(ids, every, limit, tokenizer.cls_token_id, tokenizer.sep_token_id)
        assert sequence.count(tokenizer.cls_token_id) == len(positions) >= 2 and len(sequence) <= limit
        with torch.inference_mode():
            hidden = model[0].auto_model(input_ids=torch.tensor([sequence])).last_hidden_state[0]
        want = torch.nn.functional.normalize(hidden[positions].mean(0), dim=0).numpy()
        assert_float32_close(got[i], want, terms=len(sequence) * 64, what=f"text {i}")
    # batches of mixed lengths pad without changing a vector
    alone = np.stack([encode_mcls(model, [t], "", 1, every)[0] for t in texts[:5]])
    assert_float32_close(got[:5], alone, terms=128 * 64, what="batched")


def test_mcls_is_an_eval_option_for_dense_vectors(tiny_model_path):
    from cmtp.trainer.evaluation.runner import run_task
    from cmtp.trainer.evaluation.tasks import load_tasks

    assert EvalOptions(mcls=32).mcls == 32
    with pytest.raises(CmtpError, match="--mcls gives dense vectors"):
        EvalOptions(mcls=32, heads="dense,sparse")
    with pytest.raises(CmtpError, match="mcls"):
        EvalOptions(mcls=-1)
    model = load_embedding_model(str(tiny_model_path), device="cpu")
    (task,) = load_tasks([str(ROOT / "examples" / "eval" / "cmrc2018-dev")], max_per_task=20)
    plain = run_task(model, task, EvalOptions(progress=False))
    mcls = run_task(model, task, EvalOptions(progress=False, mcls=16))
    assert set(plain.metrics) == set(mcls.metrics) and plain.metrics != mcls.metrics
