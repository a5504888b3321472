"""Searching the queries in independent partitions that worker processes run in parallel against the same
index, merged back in example order, so the output is the same for any number of partitions.

The examples are sorted by id and their query vectors are shards of ``search_batch`` rows; a partition is a
contiguous run of those shards. The driver saves everything a partition needs in the work folder (the pool,
the tuned index, the examples, the baseline); each worker opens them once (``setup``), mines its shards into
``rows/part-P.parquet`` with its tallies beside it, and the driver appends the partitions in order to the
output shards and sums the tallies.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq

from cmtp.schemas import TRAINING_EXAMPLE, CmtpError, rows_to_table
from cmtp.transforms.common.progress import ProgressCounter
from cmtp.transforms.embedding.blocks import EmbedderSpec, TextEmbedder
from cmtp.transforms.mine.config import MineConfig
from cmtp.transforms.mine.example_store import ExampleStore
from cmtp.transforms.mine.index import load_search, save_search
from cmtp.transforms.mine.miner import Miner, MinerTally, same_query_positives
from cmtp.transforms.mine.pool_store import PoolStore, VectorShards

from ..beam_runner import is_local, make_pipeline, run_to_completion
from ..progress import watch

ROWS_PER_WRITE = 4096


def partition_blocks(blocks: int, partitions: int) -> list[list[int]]:
    """Query shards 0..blocks-1 cut into at most ``partitions`` contiguous, near-equal runs."""
    parts = max(1, min(partitions, blocks))
    bounds = np.linspace(0, blocks, parts + 1).round().astype(int)
    return [list(range(lo, hi)) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True) if hi > lo]


def mine_blocks(miner: Miner, examples: ExampleStore, queries: VectorShards, blocks: list[int]):
    """Rows of the examples whose query vectors are in shards ``blocks``, in example order (one block of examples
    read at a time)."""
    offsets = queries.shard_offsets()
    for b in blocks:
        vectors = np.asarray(queries.shard(b), dtype=np.float32)
        yield from miner.mine(examples.read(offsets[b], offsets[b] + len(vectors)), vectors)
        miner.store.release()  # the pages of texts and vectors this block touched leave this process's memory
        queries.release()


def save_for_workers(miner: Miner, work: Path) -> None:
    """What a partition's worker needs besides the pool and the examples (both in the work folder already)."""
    save_search(miner.search, work / "index")
    (work / "search.json").write_text(json.dumps({"k": miner.k, "baseline": miner.baseline}))


class _SearchPartitionFn(beam.DoFn):
    """Opens the pool, index and examples once per worker; mines one partition per element."""

    def __init__(self, work: str, config: MineConfig, spec: EmbedderSpec, progress_dir: str | None = None):
        self.work, self.config, self.spec, self.progress_dir = work, config, spec, progress_dir

    def setup(self):
        self.progress = ProgressCounter(self.progress_dir)
        work = Path(self.work)
        store = PoolStore.open(work / "pool")
        self.examples = ExampleStore(work / "examples.arrow")
        self.queries = VectorShards(work / "queries")
        self.queries.attach_shards()
        settings = json.loads((work / "search.json").read_text())
        self.miner = Miner(self.config, lambda: TextEmbedder(self.spec), store, same_query_positives(self.examples))
        self.miner.search, self.miner.k, self.miner.baseline = load_search(work / "index", store), \
            settings["k"], settings["baseline"]

    def process(self, element):
        number, blocks = element
        self.miner.tally = MinerTally()
        out = Path(self.work) / "rows"
        with pq.ParquetWriter(out / f"part-{number:05d}.parquet", TRAINING_EXAMPLE) as writer:
            rows = []
            for row in mine_blocks(self.miner, self.examples, self.queries, blocks):
                rows.append(row)
                self.progress.add()
                if len(rows) == ROWS_PER_WRITE:  # a partition is written as it is mined, not held whole
                    writer.write_table(rows_to_table(rows, TRAINING_EXAMPLE))
                    rows = []
            writer.write_table(rows_to_table(rows, TRAINING_EXAMPLE))
        (out / f"part-{number:05d}.json").write_text(json.dumps(self.miner.tally.to_dict()))
        yield number

    def finish_bundle(self):
        self.progress.flush()


def search_partitions(partitions: list[list[int]], work: Path, config: MineConfig, spec: EmbedderSpec,
                      beam_args: list[str] | None, add_row, tally: MinerTally, total_queries: int,
                      workers: int = 1) -> float:
    """Mine every partition on Beam workers, then hand their rows to ``add_row`` in partition order and add
    their tallies to ``tally``; returns the seconds the workers took."""
    (work / "rows").mkdir(parents=True, exist_ok=True)
    workers = min(workers, len(partitions)) if is_local(beam_args) else 1
    started = time.perf_counter()
    with watch("mine: search", total_queries, "query", beam_args) as progress:
        pipeline = make_pipeline(beam_args, workers)
        _ = (pipeline
             | "Partitions" >> beam.Create(list(enumerate(partitions)), reshuffle=False)
             | "Spread" >> beam.Reshuffle()
             | "Search" >> beam.ParDo(_SearchPartitionFn(str(work), config, spec, progress)))
        run_to_completion(pipeline, "the search pipeline")
    seconds = time.perf_counter() - started
    for number in range(len(partitions)):
        rows_path = work / "rows" / f"part-{number:05d}.parquet"
        if not rows_path.exists():
            raise CmtpError(f"search partition {number} wrote no rows file")
        for batch in pq.ParquetFile(rows_path).iter_batches(batch_size=ROWS_PER_WRITE):
            for row in batch.to_pylist():
                add_row(row)
        tally.add(MinerTally.from_dict(json.loads(rows_path.with_suffix(".json").read_text())))
    return seconds
