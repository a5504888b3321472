"""Training speed of the proxy student against the full model it is cut from (issue #19: >= 4x per sample).

Both train with the trainer's own step (the proxy audit's recipe: frozen token table, the same query and passage
lengths and batch) on the same real LCSTS pairs; runs are interleaved A B A B so that a busy machine does not
decide the result, and the medians are compared. Also splits a proxy step into forward, backward and optimiser
time, to show where a 2-layer student spends it.

    .venv/bin/python benchmarks/proxy_speed.py --repeats 3 --steps 4
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from common import lcsts_pairs


def _write_pairs(path: str, pairs: list[tuple[str, str]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"pair_id": [f"p{i}" for i in range(len(pairs))], "title": [p[0] for p in pairs],
                             "passage": [p[1] for p in pairs], "source": ["lcsts"] * len(pairs)}), path)


def samples_per_second(model: str, data: str, steps: int, args) -> float:
    """Samples/s of ``steps`` training steps after one warm-up step (model loading not counted)."""
    from cmtp.pipelines.audit.proxy import ProxyConfig
    from cmtp.trainer.config import TrainConfig
    from cmtp.trainer.loop import train

    recipe = ProxyConfig(model=model)
    times = []

    def on_step(step, _loss):
        times.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        train(TrainConfig(stage="contrastive", model=model, data=[{"name": "b", "paths": [data]}], output_dir=out,
                          max_steps=steps + 1, batch_size=args.batch_size, learning_rate=recipe.learning_rate,
                          temperature=recipe.temperature, query_max_len=recipe.query_max_len,
                          passage_max_len=recipe.passage_max_len, freeze_embeddings=True, save_steps=0, resume=False),
              on_step=on_step)
    return steps * args.batch_size / (times[-1] - times[0])


def step_split(model: str, pairs: list[tuple[str, str]], args) -> dict[str, float]:
    """Seconds of one proxy step's forward (tokenising included), backward and AdamW update."""
    import torch

    from cmtp.pipelines.audit.proxy import ProxyConfig
    from cmtp.trainer.encoder import Encoder, load_encoder
    from cmtp.trainer.losses import info_nce
    from cmtp.transforms.embedding import resolve_model

    recipe = ProxyConfig(model=model)
    st = load_encoder(str(resolve_model(model).path))
    st[0].auto_model.get_input_embeddings().weight.requires_grad_(False)
    encoder = Encoder(st, recipe.query_max_len, recipe.passage_max_len).train()
    params = [p for p in encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe.learning_rate, fused=True)
    batch = pairs[: args.batch_size]
    split = {"forward": [], "backward": [], "optimizer": []}
    for _ in range(3):
        t0 = time.perf_counter()
        loss = info_nce(encoder([p[0] for p in batch], "query"), encoder([p[1] for p in batch], "passage"),
                        recipe.temperature, 1, False)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        for key, seconds in zip(split, [t1 - t0, t2 - t1, t3 - t2], strict=True):
            split[key].append(seconds)
    return {k: statistics.median(v[1:]) for k, v in split.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--proxy", default="builtin:me5-small-l2")
    parser.add_argument("--full", default="builtin:me5-small")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    pairs = lcsts_pairs(args.batch_size * (args.steps + 2))
    with tempfile.TemporaryDirectory() as tmp:
        data = f"{tmp}/pairs.parquet"
        _write_pairs(data, pairs)
        rates: dict[str, list[float]] = {args.proxy: [], args.full: []}
        for _ in range(args.repeats):  # A B A B: a busy spell hits both
            for model in rates:
                rates[model].append(samples_per_second(model, data, args.steps, args))
                print(f"{model}: {rates[model][-1]:.1f} samples/s", flush=True)
    proxy, full = (statistics.median(rates[m]) for m in (args.proxy, args.full))
    print(f"median samples/s: proxy {proxy:.1f}, full {full:.1f}; the proxy trains {proxy / full:.2f}x faster per "
          f"sample (target >= 4x)")
    split = step_split(args.proxy, pairs, args)
    total = sum(split.values())
    print("proxy step: " + ", ".join(f"{k} {v:.2f} s ({v / total:.0%})" for k, v in split.items()))


if __name__ == "__main__":
    main()
