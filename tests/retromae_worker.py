"""Run by test_retromae: one rank of a 2-process gloo group computing the RetroMAE loss on its half of a batch
under DDP; rank 0 saves the mean loss and the gradients."""

import os
import sys

import torch
import torch.distributed as dist


def build(model_path: str):
    """The RetroMAE model on the tiny encoder with dropout off, the aligner, and a fixed batch of texts."""
    from cmtp.trainer.encoder import load_encoder
    from cmtp.trainer.retromae.masking import WordAligner
    from cmtp.trainer.retromae.model import RetroMAE

    st = load_encoder(model_path)
    torch.manual_seed(0)
    model = RetroMAE(st, 0.3, 0.5).eval()  # eval(): no dropout, so the comparison is exact
    texts = ["长江是亚洲第一长河，发源于青藏高原", "今天股票市场全面下跌", "北京是中国的首都",
             "人工智能正在改变医疗和教育", "我喜欢在周末去公园散步", "火车因为大雪晚点了两个小时"]
    return model, WordAligner(st.tokenizer, 32), texts, [f"t{i}" for i in range(len(texts))]


def loss_of(model, aligner, texts, ids, step=3):
    from cmtp.trainer.retromae.masking import row_seeds

    batch = aligner(texts)
    return model(batch, row_seeds(ids, step, 42, torch.device("cpu")))[0]


def main(rank: int, model_path: str, out: str):
    dist.init_process_group("gloo", rank=rank, world_size=2, init_method="env://")
    model, aligner, texts, ids = build(model_path)
    net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    half = len(texts) // 2
    loss = loss_of(net, aligner, texts[rank * half : (rank + 1) * half], ids[rank * half : (rank + 1) * half])
    loss.backward()
    losses = [torch.zeros(1), torch.zeros(1)]
    dist.all_gather(losses, loss.detach().reshape(1))
    if rank == 0:
        grads = {n: p.grad for n, p in net.module.named_parameters() if p.grad is not None}
        torch.save({"loss": torch.cat(losses).mean(), "grads": grads}, out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
    # leave without the interpreter's teardown: a gloo/TCPStore thread of the process group sometimes aborts
    # in C++ static destruction once the peer (the store's host) has exited ("terminate called without an
    # active exception", exit -6), after all the work above has finished and been saved
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
