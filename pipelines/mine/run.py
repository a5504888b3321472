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

from cmtp.schemas import DEAD_LETTER, TRAINING_EXAMPLE, CmtpError, Manifest, rows_to_table
from cmtp.transforms.common.ids import shard_of
from cmtp.transforms.embedding import encode, load_embedding_model, resolve_prompts

from .config import MineConfig
from .embed import PoolStore, text_key
from .index import SearchIndex, build_index, tune_nprobe
from .inputs import Example, read_labeled, read_pairs, read_pool
from .sampling import GUARDS, Chosen, choose_negatives, random_padding

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


def _read_examples(input_path: str | None, config: MineConfig) -> tuple[list[Example], list[dict]]:
    examples: list[Example] = read_pairs(input_path) if input_path else []
    dead: list[dict] = []
    for path in config.labeled:
        labeled, bad = read_labeled(path, config.task)
        examples += labeled
        dead += bad
    if not examples:
        raise CmtpError("nothing to mine: give scored pairs (INPUT) and/or --labeled files")
    examples.sort(key=lambda e: e.example_id)
    return examples, dead


def _same_query_positives(examples: list[Example]) -> dict[int, list[str]]:
    """Normalised query key -> every positive of the examples asking it (several answers to one question)."""
    groups: dict[int, list[str]] = {}
    for e in examples:
        groups.setdefault(text_key(e.query), []).extend(e.pos)
    return groups


def score_baseline(store: PoolStore, queries: np.ndarray, seed: int, sample: int = 2048) -> float:
    """Median score of random (query, pool passage) pairs: where "unrelated" sits for this scorer and pool
    (around 0 for some models, 0.8 for e5), the zero point of the false-negative guard."""
    rng = np.random.default_rng([seed, 7])
    picks = np.sort(rng.choice(len(store), size=min(sample, len(store)), replace=False))
    q = queries[rng.choice(len(queries), size=min(256, len(queries)), replace=False)]
    return float(np.median(q.astype(np.float32) @ store.vectors(picks).T))


class _Miner:
    """Everything one example needs, prepared once: the model and prompts, the pool, the search index."""

    def __init__(self, config: MineConfig, model, prompts: tuple[str, str], store: PoolStore,
                 groups: dict[int, list[str]]):
        self.config, self.model, self.store, self.groups = config, model, store, groups
        self.query_prompt, self.passage_prompt = prompts
        self.guards: Counter = Counter({name: 0 for name in GUARDS})
        self.short_rows = self.missing = self.padded = 0
        self.baseline: float | None = None
        self.search: SearchIndex | None = None

    def passage_vectors(self, texts: list[str]) -> np.ndarray:
        """Embeddings of texts from the pool's shards, encoding only those the pool does not hold."""
        if not texts:
            return np.zeros((0, self.store.shard(0).shape[1]), np.float32)
        index = self.store.lookup(texts)
        out = np.zeros((len(texts), self.store.shard(0).shape[1]), np.float32)
        found = index >= 0
        if found.any():
            out[found] = self.store.vectors(index[found])
        if (~found).any():
            out[~found] = encode(self.model, [t for t, f in zip(texts, found, strict=True) if not f],
                                 self.passage_prompt, self.config.batch_size)
        return out

    def prepare_search(self, first_queries: np.ndarray, k: int) -> None:
        config, store = self.config, self.store
        search = build_index(store, config)
        tune_nprobe(search, store, first_queries[:512], k, config.target_recall, config.nprobe)
        if search.nlist and not config.nprobe and search.nprobe > search.nlist // 4:
            # IVF needs most of its lists for the target recall on this data: exact search costs no more
            # (with IVF-PQ, memory is what was asked to be saved: exact search one disk shard at a time)
            tried = search.tried()
            search = SearchIndex(None, "exact_sharded", store=store) if config.ivf_pq else \
                build_index(store, replace(config, flat_max=len(store)))
            search.fallback_from = tried
        self.search = search
        self.baseline = score_baseline(store, first_queries, config.seed)

    def example_row(self, example: Example, q: np.ndarray, ranked_ids: np.ndarray, ranked_scores: np.ndarray) -> dict:
        config, store = self.config, self.store
        pos_scores = [float(s) for s in self.passage_vectors(example.pos) @ q]
        labeled = example.neg if config.keep_labeled_negatives else []
        wanted = max(0, config.negatives - len(labeled))
        others = [p for p in self.groups.get(text_key(example.query), []) if p not in example.pos]
        chosen = choose_negatives(example.example_id, example.query, example.pos, pos_scores, example.cluster_id,
                                  ranked_ids, ranked_scores, store, config, wanted, self.guards, self.baseline,
                                  example.neg, others)
        if len(chosen) < wanted and config.pad_random:
            blocked = {text_key(t) for t in example.neg + others}
            fill = random_padding(example.example_id, example.query, example.pos,
                                  {c.index for c in chosen}, store, config, wanted - len(chosen), blocked)
            for idx, v in zip(fill, store.vectors(fill) if fill else [], strict=True):
                chosen.append(Chosen(idx, float(np.dot(q, v)), "random"))
            self.padded += len(fill)
        if len(chosen) < wanted:
            self.short_rows += 1
            self.missing += wanted - len(chosen)
        labeled_scores = [float(s) for s in self.passage_vectors(labeled) @ q]
        return {
            "example_id": example.example_id, "query": example.query, "pos": example.pos,
            "neg": labeled + [store.text(c.index) for c in chosen],
            "instruction": example.instruction or config.train_instruction, "source": example.source,
            "task": example.task, "pos_scores": pos_scores,
            "neg_scores": labeled_scores + [c.score for c in chosen],
            "neg_kinds": ["labeled"] * len(labeled) + [c.kind for c in chosen],
        }


def _load_model(config: MineConfig, input_path: str | None):
    model_name = config.model or _default_model(input_path)
    model = load_embedding_model(model_name, config.device, config.max_seq_length,
                                 allow_network=config.allow_network)
    return model_name, model, resolve_prompts(model, config.query_instruction, config.passage_prompt)


def _embed_pool(store: PoolStore, examples: list[Example], config: MineConfig, model, passage_prompt: str) -> int:
    if config.pool:
        pool_items = read_pool(config.pool)
    else:
        pool_items = chain.from_iterable(
            [(p, e.cluster_id) for p in e.pos] + [(n, None) for n in e.neg] for e in examples)
    pool_size = store.write_texts(pool_items)
    if pool_size < 2:
        raise CmtpError(f"the candidate pool has {pool_size} passage(s); mining needs more")
    store.write_embeddings(lambda texts: encode(model, texts, passage_prompt, config.batch_size),
                           config.embed_shard_rows)
    return pool_size


def _per_source(examples: list[Example], dead: list[dict]) -> dict[str, dict]:
    per_source: dict[str, dict] = {}
    for e in examples:
        entry = per_source.setdefault(e.source, {"in": 0, "out": 0, "dropped": {}})
        entry["in"] += 1
        entry["out"] += 1
    for d in dead:
        entry = per_source.setdefault(d["source"], {"in": 0, "out": 0, "dropped": {}})
        entry["in"] += 1
        entry["dropped"][d["reason"]] = entry["dropped"].get(d["reason"], 0) + 1
    return per_source


def run_mine(input_path: str | None, out: str, config: MineConfig | None = None) -> Manifest:
    """examples (scored pairs and/or labeled rows) -> pool embeddings on disk -> search -> guarded, seeded
    negatives -> training-example shards + manifest."""
    config = config or MineConfig()  # validated on construction
    started = time.perf_counter()
    out_dir = Path(out)
    work = out_dir / "_work"
    shutil.rmtree(work, ignore_errors=True)
    examples, dead = _read_examples(input_path, config)
    model_name, model, (query_prompt, passage_prompt) = _load_model(config, input_path)

    store = PoolStore(work / "pool")
    t_embed = time.perf_counter()
    pool_size = _embed_pool(store, examples, config, model, passage_prompt)
    embed_seconds = time.perf_counter() - t_embed

    k = min(config.range_end, pool_size)
    miner = _Miner(config, model, (query_prompt, passage_prompt), store, _same_query_positives(examples))
    writers = _ShardWriters(out_dir / "examples", config.num_shards, config.rows_per_group)
    t_search = time.perf_counter()
    for start in range(0, len(examples), config.search_batch):
        chunk = examples[start : start + config.search_batch]
        q = encode(model, [e.query for e in chunk], query_prompt, config.batch_size)
        if miner.search is None:
            miner.prepare_search(q, k)
        scores, ids = miner.search.search(q, k)
        for row, example in enumerate(chunk):
            writers.add(miner.example_row(example, q[row], ids[row], scores[row]))
    writers.close()
    search_seconds = time.perf_counter() - t_search
    if dead:
        (out_dir / "dead_letters").mkdir(parents=True, exist_ok=True)
        pq.write_table(rows_to_table(dead, DEAD_LETTER), out_dir / "dead_letters" / "part-00000-of-00001.parquet")
    shutil.rmtree(work, ignore_errors=True)
    manifest = Manifest(
        stage="mine",
        config={**config.to_dict(), "model": model_name, "input": input_path},
        inputs=[p for p in [input_path, *config.labeled, config.pool] if p],
        outputs={"examples": {"path": str(out_dir / "examples"), "files": len(writers.paths), "rows": writers.rows,
                              "schema": "training_example"},
                 "dead_letters": {"path": str(out_dir / "dead_letters"), "files": int(bool(dead)), "rows": len(dead),
                                  "schema": "dead_letter"}},
        count_in=len(examples) + len(dead), count_out=writers.rows,
        dropped=dict(Counter(d["reason"] for d in dead)), per_source=_per_source(examples, dead),
        extra={
            "pool_size": pool_size, "index": miner.search.describe(), "k": k,
            "query_prompt": query_prompt, "passage_prompt": passage_prompt,
            "score_baseline": round(miner.baseline, 6),
            "guards_removed": {name: miner.guards[name] for name in GUARDS},
            "rows_short_of_negatives": miner.short_rows, "missing_negatives": miner.missing,
            "random_padding": miner.padded,
            "embed_seconds": round(embed_seconds, 2), "search_and_sample_seconds": round(search_seconds, 2),
            "queries_per_second": round(len(examples) / max(search_seconds, 1e-9), 1),
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
    manifest.write(str(out_dir))
    return manifest


def read_examples(out: str) -> pa.Table:
    return pq.read_table(Path(out) / "examples")
