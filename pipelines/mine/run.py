"""The mine stage as a plain command: the index lives in one process; embeddings go to disk shards."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from dataclasses import replace
from itertools import chain
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from schemas import DEAD_LETTER, TRAINING_EXAMPLE, CmtpError, Manifest, rows_to_table
from transforms.common.ids import shard_of
from transforms.score.config import ScoreConfig
from transforms.score.scoring import encode, load_scoring_model, resolve_prompts

from .config import MineConfig
from .embed import PoolStore
from .index import SearchIndex, build_index, tune_nprobe
from .inputs import Example, read_labeled, read_pairs, read_pool
from .sampling import Chosen, choose_negatives, random_padding

DEFAULT_MODEL = "builtin:me5-small"


def _default_model(input_path: str | None) -> str:
    if input_path:
        try:
            return Manifest.read(input_path).config.get("model") or DEFAULT_MODEL
        except CmtpError:
            pass
    return DEFAULT_MODEL


class _ShardWriters:
    """Training examples into ``num_shards`` Parquet files, row groups of ``rows_per_group`` rows."""

    def __init__(self, directory: Path, num_shards: int, rows_per_group: int):
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("part-*.parquet"):
            old.unlink()
        self.paths = [directory / f"part-{i:05d}-of-{num_shards:05d}.parquet" for i in range(num_shards)]
        self.writers = [pq.ParquetWriter(p, TRAINING_EXAMPLE, compression="zstd") for p in self.paths]
        self.buffers: list[list[dict]] = [[] for _ in range(num_shards)]
        self.rows_per_group = rows_per_group
        self.rows = 0

    def add(self, row: dict) -> None:
        shard = shard_of(row["example_id"], len(self.writers))
        self.buffers[shard].append(row)
        self.rows += 1
        if len(self.buffers[shard]) >= self.rows_per_group:
            self._flush(shard)

    def _flush(self, shard: int) -> None:
        if self.buffers[shard]:
            self.writers[shard].write_table(rows_to_table(self.buffers[shard], TRAINING_EXAMPLE),
                                            row_group_size=self.rows_per_group)
            self.buffers[shard] = []

    def close(self) -> None:
        for shard, writer in enumerate(self.writers):
            self._flush(shard)
            writer.close()


def run_mine(input_path: str | None, out: str, config: MineConfig | None = None) -> Manifest:
    config = config or MineConfig()
    if config.range_end <= config.range_start or config.range_start < 0:
        raise CmtpError("--range must be START-END with 0 <= START < END")
    started = time.perf_counter()
    out_dir = Path(out)
    work = out_dir / "_work"
    shutil.rmtree(work, ignore_errors=True)

    examples: list[Example] = read_pairs(input_path) if input_path else []
    dead: list[dict] = []
    for path in config.labeled:
        labeled, bad = read_labeled(path, config.task)
        examples += labeled
        dead += bad
    if not examples:
        raise CmtpError("nothing to mine: give scored pairs (INPUT) and/or --labeled files")
    examples.sort(key=lambda e: e.example_id)

    model_name = config.model or _default_model(input_path)
    scoring = ScoreConfig(model=model_name, batch_size=config.batch_size, max_seq_length=config.max_seq_length,
                          query_prompt=config.query_instruction, passage_prompt=config.passage_prompt,
                          device=config.device, allow_network=config.allow_network)
    model = load_scoring_model(scoring)
    query_prompt, passage_prompt = resolve_prompts(model, scoring)

    store = PoolStore(work / "pool")
    if config.pool:
        pool_items = read_pool(config.pool)
    else:
        pool_items = chain.from_iterable(
            [(p, e.cluster_id) for p in e.pos] + [(n, None) for n in e.neg] for e in examples)
    pool_size = store.write_texts(pool_items)
    if pool_size < 2:
        raise CmtpError(f"the candidate pool has {pool_size} passage(s); mining needs more")
    t_embed = time.perf_counter()
    store.write_embeddings(lambda texts: encode(model, texts, passage_prompt, config.batch_size),
                           config.embed_shard_rows)
    embed_seconds = time.perf_counter() - t_embed

    k = min(config.range_end, pool_size)
    search = build_index(store, config)
    guards: Counter = Counter()
    short_rows = missing = padded = 0
    writers = _ShardWriters(out_dir / "examples", config.num_shards, config.rows_per_group)
    t_search = time.perf_counter()
    tuned = False
    for start in range(0, len(examples), config.search_batch):
        chunk = examples[start : start + config.search_batch]
        q = encode(model, [e.query for e in chunk], query_prompt, config.batch_size)
        if not tuned:
            tune_nprobe(search, store, q[:512], k, config.target_recall, config.nprobe)
            tuned = True
            if search.nlist and not config.nprobe and search.nprobe > search.nlist // 4:
                # IVF needs most of its lists for the target recall on this data: exact search costs no more
                # (with IVF-PQ, memory is what was asked to be saved: exact search one disk shard at a time)
                search = SearchIndex(None, "exact_sharded", store=store) if config.ivf_pq else \
                    build_index(store, replace(config, flat_max=pool_size))
        scores, ids = search.search(q, k)
        positives = [e.pos for e in chunk]
        pos_index = store.lookup([p for ps in positives for p in ps])
        missing_pos = [p for p, i in zip((p for ps in positives for p in ps), pos_index, strict=True) if i < 0]
        extra = dict(zip(missing_pos, encode(model, missing_pos, passage_prompt, config.batch_size), strict=True)) \
            if missing_pos else {}
        cursor = 0
        for row, example in enumerate(chunk):
            vectors = []
            for p in example.pos:
                idx = pos_index[cursor]
                cursor += 1
                vectors.append(store.vectors([idx])[0] if idx >= 0 else extra[p])
            pos_scores = [float(np.dot(q[row], v)) for v in vectors]
            wanted = max(0, config.negatives - (len(example.neg) if config.keep_labeled_negatives else 0))
            chosen = choose_negatives(example.example_id, example.query, example.pos, pos_scores, example.cluster_id,
                                      ids[row], scores[row], store, config, wanted, guards)
            if len(chosen) < wanted and config.pad_random:
                taken = {c.index for c in chosen}
                fill = random_padding(example.example_id, example.query, example.pos, taken, store, config,
                                      wanted - len(chosen))
                fill_vectors = store.vectors(fill) if fill else np.zeros((0, q.shape[1]), np.float32)
                for idx, v in zip(fill, fill_vectors, strict=True):
                    chosen.append(Chosen(idx, float(np.dot(q[row], v)), "random"))
                padded += len(fill)
            if len(chosen) < wanted:
                short_rows += 1
                missing += wanted - len(chosen)
            labeled = example.neg if config.keep_labeled_negatives else []
            labeled_scores = []
            if labeled:
                label_idx = store.lookup(labeled)
                label_vecs = [store.vectors([i])[0] if i >= 0 else encode(model, [t], passage_prompt, 1)[0]
                              for i, t in zip(label_idx, labeled, strict=True)]
                labeled_scores = [float(np.dot(q[row], v)) for v in label_vecs]
            writers.add({
                "example_id": example.example_id, "query": example.query, "pos": example.pos,
                "neg": labeled + [store.text(c.index) for c in chosen],
                "instruction": example.instruction or config.train_instruction, "source": example.source,
                "task": example.task, "pos_scores": pos_scores,
                "neg_scores": labeled_scores + [c.score for c in chosen],
                "neg_kinds": ["labeled"] * len(labeled) + [c.kind for c in chosen],
            })
    writers.close()
    search_seconds = time.perf_counter() - t_search
    if dead:
        (out_dir / "dead_letters").mkdir(parents=True, exist_ok=True)
        pq.write_table(rows_to_table(dead, DEAD_LETTER), out_dir / "dead_letters" / "part-00000-of-00001.parquet")
    dropped = Counter(d["reason"] for d in dead)
    per_source: dict[str, dict] = {}
    for e in examples:
        per_source.setdefault(e.source, {"in": 0, "out": 0, "dropped": {}})
        per_source[e.source]["in"] += 1
        per_source[e.source]["out"] += 1
    for d in dead:
        entry = per_source.setdefault(d["source"], {"in": 0, "out": 0, "dropped": {}})
        entry["in"] += 1
        entry["dropped"][d["reason"]] = entry["dropped"].get(d["reason"], 0) + 1
    shutil.rmtree(work, ignore_errors=True)
    manifest = Manifest(
        stage="mine",
        config={**config.to_dict(), "model": model_name, "input": input_path},
        inputs=[p for p in [input_path, *config.labeled, config.pool] if p],
        outputs={"examples": {"path": str(out_dir / "examples"), "files": len(writers.paths), "rows": writers.rows,
                              "schema": "training_example"},
                 "dead_letters": {"path": str(out_dir / "dead_letters"), "files": int(bool(dead)), "rows": len(dead),
                                  "schema": "dead_letter"}},
        count_in=len(examples) + len(dead), count_out=writers.rows, dropped=dict(dropped), per_source=per_source,
        extra={
            "pool_size": pool_size, "index": search.describe(), "k": k,
            "query_prompt": query_prompt, "passage_prompt": passage_prompt,
            "guards_removed": dict(sorted(guards.items())),
            "rows_short_of_negatives": short_rows, "missing_negatives": missing, "random_padding": padded,
            "embed_seconds": round(embed_seconds, 2), "search_and_sample_seconds": round(search_seconds, 2),
            "queries_per_second": round(len(examples) / max(search_seconds, 1e-9), 1),
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
    manifest.write(str(out_dir))
    return manifest


def read_examples(out: str) -> pa.Table:
    return pq.read_table(Path(out) / "examples")
