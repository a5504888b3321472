"""RetroMAE (stage 1) masks and training speed.

1. Mask building, rows/s: cmtp's batch-vectorised masks (whole jieba words, 80/10/10, the decoder's
   position-specific attention masks; built with tensor operations for the whole batch) against a faithful
   re-implementation of the original RetroMAE collator, which builds each row in Python: whole-word candidates
   from WordPiece ``##`` pieces, a shuffled pick of words, then for every position of the row a
   ``random.sample`` of visible positions written into an L x L matrix. Measured on the same tokenised batches,
   once without segmentation and tokenisation (masks alone) and once end to end.
2. Training: samples/s and peak RSS of RetroMAE steps on builtin:me5-small (CPU here).

    .venv/bin/python benchmarks/retromae.py --rows 512 --length 256
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np  # noqa: I001
import torch
from common import PeakMemory, chinese_passages


def reference_collator(input_ids: list[list[int]], tokens: list[list[str]], mask_id: int, vocab: int,
                       encoder_ratio: float, decoder_ratio: float, max_len: int):
    """The original per-sample collator, rebuilt: per row, Python loops over tokens and positions."""
    enc_inputs, enc_labels, dec_masks = [], [], []
    for ids, toks in zip(input_ids, tokens, strict=True):
        cand = []
        for i, tok in enumerate(toks):
            if tok in ("[CLS]", "[SEP]", "<s>", "</s>", "<pad>", "[PAD]"):
                continue
            if cand and tok.startswith("##"):
                cand[-1].append(i)
            else:
                cand.append([i])
        random.shuffle(cand)
        to_predict = max(1, int(round(len(toks) * encoder_ratio)))
        covered = set()
        for word in cand:
            if len(covered) >= to_predict:
                break
            if len(covered) + len(word) > to_predict:
                continue
            covered.update(word)
        labels = [ids[i] if i in covered else -100 for i in range(len(ids))]
        inputs = list(ids)
        for i in covered:
            r = random.random()
            inputs[i] = mask_id if r < 0.8 else (random.randrange(vocab) if r < 0.9 else ids[i])
        enc_inputs.append(inputs + [0] * (max_len - len(inputs)))
        enc_labels.append(labels + [-100] * (max_len - len(labels)))
        n = len(ids)
        matrix = np.zeros((max_len, max_len), dtype=np.int64)
        for i in range(n):
            visible = random.sample(range(n), int(n * (1 - decoder_ratio)))
            for j in visible:
                if j != i:
                    matrix[i, j] = 1
            matrix[i, 0] = 1
        dec_masks.append(matrix)
    return torch.tensor(enc_inputs), torch.tensor(enc_labels), torch.from_numpy(np.stack(dec_masks))


def bench_masks(texts: list[str], length: int, batch: int, tokenizer) -> None:
    from cmtp.trainer.retromae.masking import WordAligner, decoder_visibility, mlm_inputs, row_seeds

    aligner = WordAligner(tokenizer, length)
    batches = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    t0 = time.perf_counter()
    encoded = [aligner(b) for b in batches]
    seg = time.perf_counter() - t0
    t0 = time.perf_counter()
    for k, enc in enumerate(encoded):
        seeds = row_seeds([f"{k}-{i}" for i in range(len(enc.input_ids))], 0, 0, torch.device("cpu"))
        mlm_inputs(enc, seeds, 0.3, tokenizer.mask_token_id, len(tokenizer))
        decoder_visibility(enc.attention_mask, seeds, 0.5)
    ours = time.perf_counter() - t0
    tok = [tokenizer(b, max_length=length, truncation=True) for b in batches]
    t0 = time.perf_counter()
    pieces = [[tokenizer.convert_ids_to_tokens(ids) for ids in t["input_ids"]] for t in tok]
    base_tok = time.perf_counter() - t0
    t0 = time.perf_counter()
    for t, p in zip(tok, pieces, strict=True):
        reference_collator(t["input_ids"], p, tokenizer.mask_token_id, len(tokenizer), 0.3, 0.5,
                           max(len(x) for x in t["input_ids"]))
    theirs = time.perf_counter() - t0
    n = len(texts)
    print(f"masks alone: cmtp {n / ours:,.0f} rows/s, per-sample collator {n / theirs:,.0f} rows/s "
          f"-> {theirs / ours:.1f}x")
    print(f"end to end (cmtp: tokenise + jieba + masks; collator: tokenise + pieces + masks): cmtp "
          f"{n / (ours + seg):,.0f} rows/s, collator {n / (theirs + base_tok):,.0f} rows/s -> "
          f"{(theirs + base_tok) / (ours + seg):.1f}x")


def bench_training(texts: list[str], length: int, batch: int, steps: int) -> None:
    import pyarrow.parquet as pq

    from cmtp.schemas import PRETRAIN_TEXT, rows_to_table
    from cmtp.trainer.config import TrainConfig
    from cmtp.trainer.loop import train

    work = Path(tempfile.mkdtemp(prefix="retromae-bench-"))
    (work / "data").mkdir()
    rows = [{"text_id": f"t{i}", "source": "s", "text": t} for i, t in enumerate(texts)]
    pq.write_table(rows_to_table(rows, PRETRAIN_TEXT), work / "data" / "part-0.parquet", row_group_size=256)
    times = []
    config = TrainConfig(**dict(stage="retromae", model="builtin:me5-small", output_dir=str(work / "out"),
                                           data=[{"name": "p", "paths": [str(work / "data")]}], max_steps=steps,
                                           batch_size=batch, passage_max_len=length, save_steps=0,
                                           freeze_embeddings=True))
    last = [time.perf_counter()]

    def on_step(step, loss):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    memory = PeakMemory()
    train(config, on_step=on_step)
    peak = memory.stop()
    per_step = float(np.mean(times[1:])) if len(times) > 1 else times[0]
    print(f"training (me5-small, batch {batch}, {length} tokens, frozen token table): {batch / per_step:.1f} "
          f"samples/s, peak RSS {peak / 2**20:,.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64, help="rows per mask batch")
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--train-steps", type=int, default=4)
    args = parser.parse_args()
    random.seed(0)
    from transformers import AutoTokenizer

    from cmtp.transforms.embedding import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("builtin:me5-small").path))
    texts = chinese_passages(args.rows, min_chars=200, max_chars=600)
    bench_masks(texts, args.length, args.batch, tokenizer)
    bench_training(texts, min(args.length, 128), args.train_batch, args.train_steps)


if __name__ == "__main__":
    main()
