"""Loss pieces: cross-device InfoNCE under 2-process DDP equals one process on the concatenated batch, and
gradient caching gives the gradients of the uncached step."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from cmtp.trainer.gradcache import cached_backward
from cmtp.trainer.losses import info_nce
from tests.dist_worker import encode, free_port, make_data, model

ROOT = Path(__file__).resolve().parents[1]


def test_two_process_gloo_loss_and_gradients_equal_single_process(tmp_path):
    out = tmp_path / "rank0.pt"
    port = free_port()
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    procs = [subprocess.Popen([sys.executable, "-m", "tests.dist_worker", str(r), str(out)], cwd=ROOT, env=env)
             for r in range(2)]
    assert [p.wait(timeout=180) for p in procs] == [0, 0]
    dist_result = torch.load(out)
    xq, xp, teacher = make_data()
    net = model()
    loss = info_nce(encode(net, xq), encode(net, xp), 0.05, 2, True, teacher, 0.5, 1.0)
    loss.backward()
    assert torch.allclose(dist_result["loss"], loss.detach(), atol=1e-6)
    for got, want in zip(dist_result["grads"], [p.grad for p in net.parameters()], strict=True):
        assert torch.allclose(got, want, atol=1e-6), (got - want).abs().max()


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
    assert torch.allclose(loss_plain.detach(), loss_cached, atol=1e-6)
    for a, b in zip(plain.parameters(), cached.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), (a.grad - b.grad).abs().max()
