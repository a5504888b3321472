"""BGE-M3 in the trainer: the scores against the paper's formulas and FlagEmbedding's own code, the loss against a
reference written from the paper, training with the three heads (plain and gradient-cached, killed and resumed),
the saved folder loaded by FlagEmbedding's ``BGEM3FlagModel`` with equal scores, and retrieval scored per head."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from cmtp.schemas.errors import CmtpError
from cmtp.trainer.loop import train
from cmtp.trainer.m3 import M3Heads, parse_heads, parse_weights
from cmtp.trainer.m3.heads import COLBERT_FILE, SPARSE_FILE
from cmtp.trainer.m3.loss import m3_loss
from cmtp.trainer.m3.scores import all_scores, pair_multivector_scores, unpack
from tests.numerics import assert_float32_close
from tests.test_trainer_loop import assert_kill_and_resume_is_exact, config, examples_dir, no_dropout_model  # noqa: F401

HEADS = "dense,sparse,multivector"


def random_packed(batch: int, length: int, dim: int, vocab: int, seed: int) -> torch.Tensor:
    """A packed tensor (trainer/m3/model.py's layout) with random lengths, ids and weights."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, length + 1, (batch,), generator=g)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).float()
    vectors = F.normalize(torch.randn(batch, length, dim, generator=g), dim=-1)
    vectors[:, 1:] *= mask[:, 1:, None]
    ids = torch.randint(0, vocab, (batch, length), generator=g).float() * mask
    weights = torch.rand(batch, length, generator=g) * mask
    weights[:, 0] = 0  # [CLS] carries no weight
    return torch.cat([vectors, weights[..., None], ids[..., None], mask[..., None]], dim=-1)


def reference_scores(q: torch.Tensor, p: torch.Tensor, vocab: int) -> dict:
    """The paper's formulas as FlagEmbedding trains them: sparse through a [texts, vocabulary] tensor of each
    token's largest weight, multi-vector as max over the passage's real tokens, mean over the query's."""
    d = q.shape[-1] - 3

    def vocab_vectors(x):
        out = torch.zeros(x.shape[0], vocab, dtype=torch.float64)
        for r in range(x.shape[0]):
            for w, t in zip(x[r, :, d].tolist(), x[r, :, d + 1].round().long().tolist(), strict=True):
                out[r, t] = max(out[r, t].item(), w)
        return out

    multi = torch.zeros(q.shape[0], p.shape[0], dtype=torch.float64)
    for i in range(q.shape[0]):
        qv = q[i, 1:, :d][q[i, 1:, d + 2] > 0].double()
        for j in range(p.shape[0]):
            pv = p[j, 1:, :d][p[j, 1:, d + 2] > 0].double()
            multi[i, j] = (qv @ pv.T).max(1).values.mean()
    return {"dense": q[:, 0, :d].double() @ p[:, 0, :d].double().T,
            "sparse": vocab_vectors(q) @ vocab_vectors(p).T, "multivector": multi}


def test_scores_equal_the_papers_formulas():
    q, p = random_packed(3, 7, 8, 20, 0), random_packed(6, 9, 8, 20, 1)
    got, want = all_scores(q, p, ("dense", "sparse", "multivector")), reference_scores(q, p, 20)
    for head in want:
        assert_float32_close(got[head], want[head], terms=9 * 8, what=head)
    pairs = pair_multivector_scores(unpack(q), unpack(p[:3]))
    assert_float32_close(pairs, torch.diagonal(want["multivector"][:, :3]), terms=9 * 8, what="pairs")


def reference_loss(q, p, group, temperature, weights, self_distill, vocab):
    s = {h: v / temperature for h, v in reference_scores(q, p, vocab).items()}
    w = dict(zip(("dense", "sparse", "multivector"), weights, strict=True))
    labels = torch.arange(q.shape[0]) * group
    ens = sum(w[h] * s[h] for h in s)
    ce = {h: F.cross_entropy(s[h], labels) for h in s}
    loss = (sum(w[h] * ce[h] for h in s) + F.cross_entropy(ens, labels)) / 4
    if self_distill:
        target = F.softmax(ens, dim=-1)
        kl = {h: -(target * F.log_softmax(s[h], dim=-1)).sum(-1).mean() for h in s}
        loss = (loss + sum(w[h] * kl[h] for h in s) / 3) / 2
    return loss


@pytest.mark.parametrize("self_distill", [True, False])
def test_loss_equals_a_reference_from_the_paper(self_distill):
    q, p = random_packed(3, 6, 8, 15, 2), random_packed(6, 8, 8, 15, 3)
    got = m3_loss(q, p, heads=("dense", "sparse", "multivector"), weights=(1, 0.3, 1), temperature=0.05,
                  group_size=2, cross_device=False, self_distill=self_distill)
    want = reference_loss(q, p, 2, 0.05, (1, 0.3, 1), self_distill, 15)
    assert_float32_close(got, want, terms=6 * 8 * 8 * 4, what="loss", scale=20 * float(want))


def test_padding_slots_add_nothing_to_the_loss():
    q, p = random_packed(2, 6, 8, 15, 4), random_packed(6, 8, 8, 15, 5)
    filler = torch.tensor([False, False, True, False, False, False])
    kw = dict(heads=("dense", "sparse", "multivector"), weights=(1, 0.3, 1), temperature=0.05, group_size=3,
              cross_device=False)
    masked = m3_loss(q, p, filler=filler, **kw)
    moved = p.clone()
    moved[2] = random_packed(1, 8, 8, 15, 6)[0]  # whatever sits in the padding slot
    assert torch.isfinite(masked)
    assert torch.equal(masked, m3_loss(q, moved, filler=filler, **kw))


def test_options_are_checked():
    assert parse_heads("multivector,dense") == ("dense", "multivector")
    assert parse_weights("1,0.3,1") == (1.0, 0.3, 1.0)
    with pytest.raises(CmtpError, match="unknown"):
        parse_heads("dense,splade")
    with pytest.raises(CmtpError, match="dense is always"):
        parse_heads("sparse")
    with pytest.raises(CmtpError, match="three numbers"):
        parse_weights("1,0.3")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, no_dropout_model, examples_dir):  # noqa: F811
    out = tmp_path_factory.mktemp("m3") / "run"
    losses = []
    summary = train(config(no_dropout_model, examples_dir, out, max_steps=30, heads=HEADS),
                    on_step=lambda step, loss: losses.append(loss))
    return Path(summary["model"]), losses


def test_training_the_three_heads_saves_them_where_flagembedding_reads_them(trained, no_dropout_model):  # noqa: F811
    folder, losses = trained
    assert np.mean(losses[-6:]) < 0.8 * np.mean(losses[:6]), losses
    assert (folder / SPARSE_FILE).is_file() and (folder / COLBERT_FILE).is_file()
    start, end = load_file(Path(no_dropout_model) / "model.safetensors"), load_file(folder / "model.safetensors")
    assert any(not torch.equal(start[k], end[k]) for k in start)  # the encoder trained with the heads
    heads, loaded = M3Heads.for_model(folder, 32)
    assert loaded and heads.colbert.weight.shape == (32, 32)
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert 'BGEM3FlagModel("PATH_TO_THIS_FOLDER", pooling_method="mean"' in card  # the tiny model pools by mean
    assert "| `heads` | `dense,sparse,multivector` |" in card


def test_bgem3flagmodel_loads_the_model_and_agrees_with_cmtp(trained):
    from FlagEmbedding import BGEM3FlagModel
    from sentence_transformers import SentenceTransformer

    from cmtp.trainer.m3.retrieval import packed_batches

    folder, _ = trained
    queries = ["长江是亚洲第一长河", "股票市场"]
    passages = ["长江全长六千三百公里，是亚洲第一长河。", "今天股市大幅下跌。"]
    flag = BGEM3FlagModel(str(folder), use_fp16=False, pooling_method="mean", devices="cpu")
    fq = flag.encode(queries, return_dense=True, return_sparse=True, return_colbert_vecs=True)
    fp = flag.encode(passages, return_dense=True, return_sparse=True, return_colbert_vecs=True)
    st = SentenceTransformer(str(folder), device="cpu")
    heads, _ = M3Heads.for_model(folder, 32)
    ((_, q),) = list(packed_batches(st, heads, queries, "", 8))
    ((_, p),) = list(packed_batches(st, heads, passages, "", 8))
    ours = all_scores(q, p, ("dense", "sparse", "multivector"))
    dense = torch.from_numpy(fq["dense_vecs"] @ fp["dense_vecs"].T)
    sparse = torch.tensor(flag.compute_lexical_matching_score(fq["lexical_weights"], fp["lexical_weights"]))
    multi = torch.tensor([[float(flag.colbert_score(a, b)) for b in fp["colbert_vecs"]] for a in fq["colbert_vecs"]])
    # both sides run the same float32 model on differently padded batches: rounding of a 2-layer, 32-wide encoder
    terms = 2 * 32 * 32
    assert_float32_close(ours["dense"], dense, terms, what="dense")
    assert_float32_close(ours["sparse"], sparse, terms, what="sparse", scale=float(sparse.abs().max()) + 1e-3)
    assert_float32_close(ours["multivector"], multi, terms, what="multi-vector")


def test_gradient_caching_matches_plain_training_with_the_heads(no_dropout_model, examples_dir, tmp_path):  # noqa: F811
    a = train(config(no_dropout_model, examples_dir, tmp_path / "plain", max_steps=3, heads=HEADS))
    b = train(config(no_dropout_model, examples_dir, tmp_path / "cached", max_steps=3, heads=HEADS, gradcache_chunk=5))
    for name in ("model.safetensors",):
        wa, wb = load_file(Path(a["model"]) / name), load_file(Path(b["model"]) / name)
        for key in wa:
            assert torch.allclose(wa[key], wb[key], atol=1e-4), key
    for name in (SPARSE_FILE, COLBERT_FILE):
        ha = torch.load(Path(a["model"]) / name, weights_only=True)
        hb = torch.load(Path(b["model"]) / name, weights_only=True)
        for key in ha:
            assert torch.allclose(ha[key], hb[key], atol=1e-4), (name, key)


def test_kill_and_resume_with_the_heads_is_exact(no_dropout_model, examples_dir, tmp_path):  # noqa: F811
    def make(out, **kw):
        return config(no_dropout_model, examples_dir, out, heads=HEADS, **kw)

    assert_kill_and_resume_is_exact(make, tmp_path, steps=5, save_steps=2, kill_at=3)
    for name in (SPARSE_FILE, COLBERT_FILE):
        whole = torch.load(tmp_path / "whole" / "model" / name, weights_only=True)
        resumed = torch.load(tmp_path / "interrupted" / "model" / name, weights_only=True)
        assert all(torch.equal(whole[k], resumed[k]) for k in whole), name


def test_retrieval_is_scored_by_each_head_and_the_hybrid(trained):
    from sentence_transformers import SentenceTransformer

    from cmtp.trainer.evaluation import EvalOptions
    from cmtp.trainer.evaluation.task_data import retrieval_data
    from cmtp.trainer.m3.retrieval import attach_heads, m3_retrieval

    folder, _ = trained
    rows = [("长江", ["长江是亚洲第一长河。"], ["股票下跌。"]), ("股票", ["今天股市大幅下跌。"], ["黄河很长。"]),
            ("黄河", ["黄河是中国第二长河。"], ["天气晴朗。"])]
    data = retrieval_data(rows)
    st = SentenceTransformer(str(folder), device="cpu")
    attach_heads(st, M3Heads.for_model(folder, 32)[0])
    prompts = {"query": "", "passage": ""}
    dense_only = m3_retrieval(st, data, prompts, EvalOptions(heads="dense", batch_size=2, top_k=3))
    full = m3_retrieval(st, data, prompts, EvalOptions(heads=HEADS, batch_size=2, top_k=3))
    for prefix in ("sparse_", "multivector_", "hybrid_"):
        assert 0 <= full[prefix + "ndcg_at_10"] <= 1
        assert prefix + "ndcg_at_10" not in dense_only
    assert full["ndcg_at_10"] == dense_only["ndcg_at_10"]
    # hybrid with only the dense weight ranks the union by dense score: dense's own ranking on these few documents
    dense_weighted = m3_retrieval(st, data, prompts, EvalOptions(heads=HEADS, head_weights="1,0,0", batch_size=2,
                                                                 top_k=6))
    assert dense_weighted["hybrid_ndcg_at_10"] == pytest.approx(dense_weighted["ndcg_at_10"], rel=1e-6)


def test_torchrun_two_gloo_processes_train_the_heads(no_dropout_model, examples_dir, tmp_path):  # noqa: F811
    import shutil
    import subprocess
    import sys

    from tests.dist_worker import free_port

    root = Path(__file__).resolve().parents[1]
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    out = tmp_path / "ddp"
    cmd = [torchrun, "--nproc_per_node=2", f"--master_port={free_port()}", "-m", "cmtp.pipelines", "train",
           "--stage", "finetune", "--model", str(no_dropout_model), "--data", str(examples_dir), "--out", str(out),
           "--max-steps", "3", "--batch-size", "4", "--train-group-size", "2", "--gradcache-chunk", "4",
           "--save-steps", "2", "--heads", HEADS]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    start = M3Heads.for_model(out / "checkpoints" / "step-2" / "model", 32)[0]
    end = M3Heads.for_model(out / "model", 32)[0]
    assert not torch.equal(start.colbert.weight, end.colbert.weight)  # the heads kept training after step 2
    assert proc.stdout.count("trained 3 steps") == 1
