"""Stage 1 (RetroMAE): whole-word masks on real Chinese, mask ratios, the decoder's attention mask, the loss falls
on the sample corpus, 2-process gloo equals one process, kill and resume is exact, the encoder loads in
sentence-transformers and starts stage 2."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from cmtp.pipelines.stages import STAGES, prepare
from cmtp.schemas import PRETRAIN_TEXT, rows_to_table
from cmtp.trainer.config import TrainConfig
from cmtp.trainer.loop import train
from cmtp.trainer.retromae.masking import (
    EncodedBatch,
    WordAligner,
    choose_masked_tokens,
    decoder_visibility,
    mlm_inputs,
    row_seeds,
)
from tests.dist_worker import free_port
from tests.numerics import assert_float32_close, gradient_scale

# the reductions behind a RetroMAE gradient, summed: the tiny encoder's two layers (16-wide heads, softmax and
# weighted sums over 32 positions, 32/64-wide projections, LayerNorms), the decoder layer, the softmax over the
# vocabulary (a few hundred characters), the mean over the masked tokens and the sum over 6 texts x 32 positions
RETROMAE_TERMS = 3 * (16 + 32 + 32 + 32 + 64 + 64) + 512 + 6 * 32 + 6 * 32

RAW = Path(__file__).parent / "data" / "raw"
ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ["长江是亚洲第一长河，发源于青藏高原的唐古拉山脉", "人工智能正在改变医疗、金融和教育等许多行业",
             "采用修正的罗德里格斯参数建立了飞行器姿态控制系统的数学模型", "北京是中国的首都，也是全国的政治和文化中心",
             "平安信用卡上门激活失败是为啥？"]


@pytest.fixture(scope="module")
def me5_tokenizer(builtin_model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(builtin_model_path))


def test_whole_word_masks_cover_whole_jieba_words(me5_tokenizer):
    import jieba

    aligner = WordAligner(me5_tokenizer, 64)
    batch = aligner(SENTENCES * 20)
    seeds = row_seeds([f"r{i}" for i in range(len(SENTENCES) * 20)], 0, 1, torch.device("cpu"))
    chosen = choose_masked_tokens(batch.word_ids, seeds, 0.3, salt=1)
    multi_token_words = 0
    for row in range(len(SENTENCES) * 20):
        words = batch.word_ids[row]
        for w in words[words >= 0].unique():
            tokens = chosen[row][words == w]
            assert tokens.all() or not tokens.any()  # a word is masked whole or not at all
            multi_token_words += int((words == w).sum() > 1 and tokens.all())
    assert multi_token_words > 0  # words of several tokens were masked together
    # every masking unit is a run of whole jieba words: it starts and ends on jieba's word boundaries
    enc = me5_tokenizer(SENTENCES, max_length=64, truncation=True, padding=True, return_offsets_mapping=True)
    for row, text in enumerate(SENTENCES):
        bounds = {b for _, start, end in jieba.tokenize(text) for b in (start, end)}
        words = batch.word_ids[row]
        for w in words[words >= 0].unique():
            spans = [enc["offset_mapping"][row][i] for i in np.flatnonzero(words == w)]
            assert min(s for s, _ in spans) in bounds and max(e for _, e in spans) in bounds, (text, spans)
        assert int(words.max()) + 1 >= 0.6 * len(list(jieba.tokenize(text)))
    per_token = WordAligner(me5_tokenizer, 64, whole_word=False)(SENTENCES[:1]).word_ids[0]
    assert per_token[per_token >= 0].tolist() == list(range(int((per_token >= 0).sum())))


def test_mask_ratios_hold_on_average(me5_tokenizer):
    texts = [line.split("\t")[1] for line in (RAW / "lcsts" / "clge_train_head30.tsv").read_text(
        encoding="utf-8").splitlines()] * 10
    batch = WordAligner(me5_tokenizer, 128)(texts)
    seeds = row_seeds([f"r{i}" for i in range(len(texts))], 5, 3, torch.device("cpu"))
    chosen = choose_masked_tokens(batch.word_ids, seeds, 0.3, salt=1)
    n_words = batch.word_ids.max(dim=1).values + 1
    masked_words = torch.tensor([len(batch.word_ids[r][chosen[r]].unique()) for r in range(len(texts))])
    assert abs(float(masked_words.sum() / n_words.sum()) - 0.3) < 0.01
    inputs, labels = mlm_inputs(batch, seeds, 0.3, me5_tokenizer.mask_token_id, len(me5_tokenizer))
    sel = labels != -100
    assert torch.equal(sel, chosen)
    is_mask = (inputs[sel] == me5_tokenizer.mask_token_id).float().mean()
    kept = (inputs[sel] == batch.input_ids[sel]).float().mean()
    assert abs(float(is_mask) - 0.8) < 0.03 and abs(float(kept) - 0.1) < 0.03
    assert torch.equal(inputs[~sel], batch.input_ids[~sel])
    # the masks depend on the row's seed only, not on its batch: the second half alone gets the same masks
    half = EncodedBatch(batch.input_ids[150:], batch.attention_mask[150:], batch.word_ids[150:])
    again, _ = mlm_inputs(half, seeds[150:], 0.3, me5_tokenizer.mask_token_id, len(me5_tokenizer))
    assert torch.equal(again, inputs[150:])


def test_the_decoder_sees_the_sentence_embedding_and_its_sampled_context_never_itself():
    attention = torch.ones(40, 30, dtype=torch.long)
    attention[:, 25:] = 0  # padding
    seeds = row_seeds([f"r{i}" for i in range(40)], 0, 0, torch.device("cpu"))
    visible = decoder_visibility(attention, seeds, 0.5)
    assert visible[:, :, 0].all()  # the sentence embedding, everywhere
    assert not visible[:, torch.arange(1, 30), torch.arange(1, 30)].any()  # never itself
    assert not visible[:, :, 25:].any()  # never padding
    context = visible[:, 1:25, 1:25]
    share = context.sum() / (40 * 24 * 23)  # the off-diagonal real positions
    assert abs(float(share) - 0.5) < 0.02
    assert not torch.equal(visible[0], visible[1])  # position-specific and row-specific samples
    shorter = decoder_visibility(attention[:, :26], seeds, 0.5, size=64)  # the same rows padded less
    assert torch.equal(shorter, decoder_visibility(attention, seeds, 0.5, size=64)[:, :26, :26])


@pytest.fixture(scope="module")
def pretrain_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pretrain")
    texts = [line.split("\t")[1][:100] for name in ["lcsts/clge_train_head30.tsv", "csl/clge_csl_val_head20.tsv"]
             for line in (RAW / name).read_text(encoding="utf-8").splitlines()]
    rows = [{"text_id": f"t{i:03d}", "source": "s", "text": t} for i, t in enumerate(texts)]
    pq.write_table(rows_to_table(rows, PRETRAIN_TEXT), d / "part-00000.parquet", row_group_size=10)
    return d


def config(model, data, out, **kw):
    values = dict(stage="retromae", model=str(model), data=[{"name": "p", "paths": [str(data)]}],
                  output_dir=str(out), max_steps=40, batch_size=8, learning_rate=3e-3, save_steps=1000,
                  passage_max_len=64, seed=1)
    values.update(kw)
    return prepare(STAGES["train"], values)[0]


def test_loss_falls_and_the_encoder_loads_and_starts_stage_2(tiny_model_path, pretrain_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    losses = []
    summary = train(config(tiny_model_path, pretrain_dir, tmp_path / "s1"), on_step=lambda s, v: losses.append(v))
    assert np.mean(losses[-8:]) < 0.9 * np.mean(losses[:8]), losses  # 15.2 -> 13.0 here
    model = SentenceTransformer(summary["model"], device="cpu")
    assert model.encode(["长江是亚洲第一长河"]).shape == (1, 32)
    assert not any("decoder" in k or "head" in k for k in load_file(Path(summary["model"]) / "model.safetensors"))
    stage2 = TrainConfig(stage="contrastive", model=summary["model"],
                         data=[{"name": "p", "paths": [str(pretrain_dir)]}], output_dir=str(tmp_path / "s2"),
                         max_steps=2, batch_size=4, save_steps=0)
    assert train(stage2)["steps"] == 2


def test_two_gloo_processes_equal_one_process_on_the_whole_batch(tiny_model_path, tmp_path):
    from tests.retromae_worker import build, loss_of

    out = tmp_path / "rank0.pt"
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    procs = [subprocess.Popen([sys.executable, "-m", "tests.retromae_worker", str(r), str(tiny_model_path),
                               str(out)], cwd=ROOT, env=env) for r in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    got = torch.load(out)
    model, aligner, texts, ids = build(str(tiny_model_path))
    loss = loss_of(model, aligner, texts, ids)
    loss.backward()
    assert_float32_close(got["loss"], loss.detach(), RETROMAE_TERMS, what="loss")
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(got["grads"]) == set(grads)
    scale = gradient_scale(grads.values())
    for name, grad in grads.items():
        assert_float32_close(got["grads"][name], grad, RETROMAE_TERMS, what=name, scale=scale)


def test_kill_and_resume_gives_identical_weights(tiny_model_path, pretrain_dir, tmp_path):
    from tests.test_trainer_loop import assert_kill_and_resume_is_exact

    assert_kill_and_resume_is_exact(lambda out, **kw: config(tiny_model_path, pretrain_dir, out, **kw), tmp_path,
                                    steps=6, save_steps=2, kill_at=5)
