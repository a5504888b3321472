"""Loss pieces: cross-device InfoNCE under 2-process DDP equals one process on the concatenated batch, and
gradient caching gives the gradients of the uncached step."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cmtp.trainer.gradcache import cached_backward
from cmtp.trainer.losses import info_nce
from tests.dist_worker import encode, filler_mask, free_port, make_data, model
from tests.numerics import assert_float32_close, gradient_scale, rounding_excess

ROOT = Path(__file__).resolve().parents[1]


def _two_gloo_processes(tmp_path, *mode: str) -> dict:
    out = tmp_path / f"rank0{'-'.join(('',) + mode)}.pt"
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    procs = [subprocess.Popen([sys.executable, "-m", "tests.dist_worker", str(r), str(out), *mode], cwd=ROOT, env=env)
             for r in range(2)]
    assert [p.wait(timeout=180) for p in procs] == [0, 0]
    return torch.load(out)


def _one_process_on_the_whole_batch():
    xq, xp, teacher = make_data()
    net = model()
    loss = info_nce(encode(net, xq), encode(net, xp), 0.05, 2, True, teacher, 0.5, 1.0)
    loss.backward()
    return loss.detach(), [p.grad for p in net.parameters()]


# the reductions chained behind a gradient, summed: the two layers (5 + 6 inputs), the normalisation and the dot
# products (6 + 6), the softmax over the 12 gathered passages, the distillation KL (2), the mean over 6 queries and
# the gradient's sum over the 18 texts of the global batch
REDUCTION_TERMS = 5 + 6 + 6 + 6 + 12 + 2 + 6 + 18


@pytest.fixture(scope="module")
def single_process():
    return _one_process_on_the_whole_batch()


def test_two_process_gloo_loss_and_gradients_equal_single_process(tmp_path, single_process):
    got = _two_gloo_processes(tmp_path)
    loss, grads = single_process
    assert_float32_close(got["loss"], loss, REDUCTION_TERMS, what="loss")
    scale = gradient_scale(grads)
    for i, (mine, want) in enumerate(zip(got["grads"], grads, strict=True)):
        assert_float32_close(mine, want, REDUCTION_TERMS, what=f"gradient {i}", scale=scale)


def test_the_comparison_catches_a_missing_all_gather(tmp_path, single_process):
    """The tolerance is no blanket: without cross-device negatives the same comparison fails by far."""
    got = _two_gloo_processes(tmp_path, "local")
    loss, grads = single_process
    excess = [rounding_excess(mine, want, REDUCTION_TERMS) for mine, want in zip(got["grads"], grads, strict=True)]
    assert rounding_excess(got["loss"], loss, REDUCTION_TERMS) > 100 and max(excess) > 100
    # a loss scaled by the world size (a classic DDP mistake) fails too
    assert rounding_excess(loss * 2, loss, REDUCTION_TERMS) > 100


def test_padding_slots_are_left_out_across_two_processes_as_in_one(tmp_path):
    """A batch padded on one rank only (a row without hard negatives): both ranks must gather the padding mask
    (a rank without padding too, or the collectives deadlock), and the loss and gradients equal one process
    masking the same slots."""
    got = _two_gloo_processes(tmp_path, "filler")
    xq, xp, _ = make_data()
    net = model()
    loss = info_nce(encode(net, xq), encode(net, xp), 0.05, 2, True, filler=filler_mask())
    loss.backward()
    grads = [p.grad for p in net.parameters()]
    assert_float32_close(got["loss"], loss.detach(), REDUCTION_TERMS, what="loss")
    scale = gradient_scale(grads)
    for i, (mine, want) in enumerate(zip(got["grads"], grads, strict=True)):
        assert_float32_close(mine, want, REDUCTION_TERMS, what=f"gradient {i}", scale=scale)


def test_padding_slots_leave_the_softmax():
    """A masked slot counts for no query: with every negative slot padded, the loss is in-batch InfoNCE over the
    positives alone (group 1), whatever the padded rows hold; unmasked, a copy of a query's own positive among
    its candidates floors the loss at ln 2."""
    q = torch.nn.functional.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    pos = torch.nn.functional.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(1)), dim=-1)
    padded = torch.stack([pos, torch.zeros(3, 4)], dim=1).reshape(6, 4)
    mask = torch.tensor([False, True] * 3)
    in_batch = info_nce(q, pos, 0.05, 1, cross_device=False)
    assert torch.allclose(info_nce(q, padded, 0.05, 2, cross_device=False, filler=mask), in_batch, rtol=1e-6)
    copies = torch.stack([q, q], dim=1).reshape(6, 4)  # each query's positive twice
    assert info_nce(q, copies, 0.05, 2, cross_device=False) > 0.69
    assert info_nce(q, copies, 0.05, 2, cross_device=False, filler=mask) < 1e-3


def test_hard_negative_labels_and_distillation():
    q = torch.eye(2)
    p = torch.tensor([[1.0, 0], [0, -1.0], [0, 1.0], [-1.0, 0]])  # groups: (pos, neg) per query
    low = info_nce(q, p, 0.1, 2, cross_device=False)
    swapped = info_nce(q, p[[1, 0, 3, 2]], 0.1, 2, cross_device=False)
    assert low < 0.01 and swapped > 5
    agree, disagree = torch.tensor([[10.0, 0.0], [10.0, 0.0]]), torch.tensor([[0.0, 10.0], [0.0, 10.0]])
    assert abs(info_nce(q, p, 0.1, 2, False, agree, 1.0, 1.0) - low) < 1e-3  # the teacher agrees: no KL
    assert info_nce(q, p, 0.1, 2, False, disagree, 1.0, 1.0) > low + 5  # it prefers the negative: large KL


class TextNet(torch.nn.Module):
    """A text encoder with dropout, so the cached pass must replay random state."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.EmbeddingBag(50000, 16)
        self.drop = torch.nn.Dropout(0.3)
        self.out = torch.nn.Linear(16, 8)

    def forward(self, texts, kind="passage"):
        ids = [torch.tensor([ord(c) % 50000 for c in t]) for t in texts]
        offsets = torch.tensor([0] + [len(i) for i in ids[:-1]]).cumsum(0)
        return torch.nn.functional.normalize(self.out(self.drop(self.emb(torch.cat(ids), offsets))), dim=-1)


def test_gradcache_gradients_equal_uncached():
    queries = [f"问题{i}是什么" for i in range(12)]
    passages = [f"答案{i}在这里，还有一些内容{j}" for i in range(12) for j in range(3)]

    def loss_fn(q, p):
        return info_nce(q, p, 0.05, 3, cross_device=False)

    torch.manual_seed(123)
    plain = TextNet()
    loss_plain = loss_fn(plain(queries), plain(passages))
    loss_plain.backward()
    torch.manual_seed(123)
    cached = TextNet()
    loss_cached = cached_backward(cached, queries, passages, loss_fn, chunk_size=5, device=torch.device("cpu"))
    # the chained reductions, summed: a bag of up to 20 characters, 16 features, the 8-wide dot products, the
    # softmax over 36 passages, the mean over 12 queries, the gradient's sum over 48 texts
    terms = 20 + 16 + 8 + 36 + 12 + 48
    assert_float32_close(loss_cached, loss_plain.detach(), terms, what="loss")
    scale = gradient_scale(p.grad for p in plain.parameters())
    for a, b in zip(plain.parameters(), cached.parameters(), strict=True):
        assert_float32_close(b.grad, a.grad, terms, what="gradient", scale=scale)
