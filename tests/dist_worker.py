"""Run by test_trainer_loss: one rank of a 2-process gloo group computing the cross-device InfoNCE under DDP."""

import os
import socket
import sys

import torch
import torch.distributed as dist

from cmtp.trainer.losses import info_nce


def free_port() -> int:
    """A TCP port nothing listens on now, for a rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_data(seed=0, batch=3, group=2, dim=6, feat=5):
    g = torch.Generator().manual_seed(seed)
    xq = torch.randn(2 * batch, feat, generator=g)
    xp = torch.randn(2 * batch * group, feat, generator=g)
    teacher = torch.randn(2 * batch, group, generator=g)
    return xq, xp, teacher


def model(seed=1, feat=5, dim=6):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(feat, dim), torch.nn.Tanh(), torch.nn.Linear(dim, dim))


def encode(net, x):
    return torch.nn.functional.normalize(net(x), dim=-1)


def filler_mask(batch=3, group=2) -> torch.Tensor:
    """Padding slots of the global batch for the "filler" mode: two on rank 1, none on rank 0."""
    mask = torch.zeros(2 * batch * group, dtype=torch.bool)
    mask[[batch * group + 1, 2 * batch * group - 1]] = True
    return mask


def main(rank: int, out: str, mode: str = ""):
    # TCP rendezvous (MASTER_ADDR / MASTER_PORT from the test), as under torchrun; the file:// store crashed
    # now and then at exit with "terminate called without an active exception"
    dist.init_process_group("gloo", rank=rank, world_size=2, init_method="env://")
    batch, group = 3, 2
    xq, xp, teacher = make_data()
    net = torch.nn.parallel.DistributedDataParallel(model())
    q = encode(net, xq[rank * batch : (rank + 1) * batch])
    p = encode(net, xp[rank * batch * group : (rank + 1) * batch * group])
    # mode "local" (cross_device=False) is the deliberately broken variant (no all-gather) that the comparison must
    # catch; mode "filler" pads two slots of rank 1 only (rank 0 passes no mask, yet must join the mask's gather)
    if mode == "filler":
        local = filler_mask(batch, group)[rank * batch * group : (rank + 1) * batch * group]
        loss = info_nce(q, p, 0.05, group, True, filler=local if local.any() else None)
    else:
        loss = info_nce(q, p, 0.05, group, mode != "local", teacher[rank * batch : (rank + 1) * batch], 0.5, 1.0)
    loss.backward()
    losses = [torch.zeros(1), torch.zeros(1)]
    dist.all_gather(losses, loss.detach().reshape(1))
    if rank == 0:
        torch.save({"loss": torch.cat(losses).mean(), "grads": [prm.grad for prm in net.module.parameters()]}, out)
    dist.barrier()  # rank 1 must not tear the group down while rank 0 is still saving
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], *sys.argv[3:])
    # leave without the interpreter's teardown: a gloo/TCPStore thread of the process group sometimes aborts
    # in C++ static destruction once the peer (the store's host) has exited ("terminate called without an
    # active exception", exit -6), after all the work above has finished and been saved
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
