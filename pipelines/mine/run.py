"""The mine stage: embeddings on Beam workers into disk shards, one index, the queries searched in partitions
(in this process, or on Beam workers), merged in example order into training-example shards + manifest."""

from __future__ import annotations

import functools
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from itertools import chain
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from cmtp.schemas import DEAD_LETTER, TRAINING_EXAMPLE, CmtpError, Manifest, rows_to_table
from cmtp.transforms.common.outcomes import DROPPED, IN, OUT, summarize
from cmtp.transforms.common.parquet_shards import StreamingShardWriter
from cmtp.transforms.common.paths import files_matching
from cmtp.transforms.common.progress import bar, step
from cmtp.transforms.embedding import DEFAULT_MODEL
from cmtp.transforms.embedding.blocks import EmbedderSpec, TextEmbedder
from cmtp.transforms.embedding.prompts import spec_prompts
from cmtp.transforms.mine.config import RUN_OPTIONS, MineConfig, MineRunOptions
from cmtp.transforms.mine.example_store import ExampleStore
from cmtp.transforms.mine.index import search_on_gpu
from cmtp.transforms.mine.inputs import labeled_chunks, read_pairs, read_pool
from cmtp.transforms.mine.miner import Miner, MinerTally, same_query_positives
from cmtp.transforms.mine.pool_store import PoolStore, VectorShards, write_text_file
from cmtp.transforms.mine.sampling import GUARDS

from ..stages import Stage, listed, runner_config_of
from .embedding import embed_blocks, embedder_spec, pool_and_query_blocks
from .partitions import mine_blocks, partition_blocks, save_for_workers, search_partitions


def _default_model(input_path: str | None) -> str:
    if input_path:
        try:
            return Manifest.read(input_path).config.get("model") or DEFAULT_MODEL
        except CmtpError:
            pass
    return DEFAULT_MODEL


def _read_examples(input_path: str | None, config: MineConfig, work: Path) -> tuple[ExampleStore, list[dict]]:
    """Every example of the inputs in one file sorted by id (``ExampleStore``), and the labeled rows' dead letters."""
    dead: list[dict] = []
    labeled = [f for pattern in config.labeled for f in files_matching(pattern)]
    chunks = chain(read_pairs(input_path) if input_path else (),
                   *(labeled_chunks(path, config.task, dead) for path in labeled))
    work.mkdir(parents=True, exist_ok=True)
    examples = ExampleStore.build(work / "examples.arrow", chunks)
    if not len(examples) and dead:
        raise CmtpError(f"nothing to mine: none of the {len(dead)} labeled row(s) is usable (first: "
                        f"{dead[0]['reason']}); each needs query, pos and neg")
    if not len(examples) and input_path:
        raise CmtpError(f"nothing to mine: {input_path} holds no kept pairs" + (" (nor usable labeled rows)" if
                                                                               config.labeled else ""))
    if not len(examples):
        raise CmtpError("nothing to mine: give scored pairs (INPUT) and/or --labeled files")
    return examples, dead


def _write_pool_texts(store: PoolStore, examples: ExampleStore, config: MineConfig) -> int:
    if config.pool:
        pool_items = lambda: read_pool(config.pool)  # noqa: E731 (read twice: keys, then texts)
    else:
        pool_items = lambda: ((text, cluster) for block in examples.blocks() for e in block  # noqa: E731
                              for text, cluster in [(p, e.cluster_id) for p in e.pos] + [(n, None) for n in e.neg])
    pool_size = store.write_texts(pool_items)
    if pool_size < 2:
        raise CmtpError(f"the candidate pool has {pool_size} passage(s); mining needs more")
    return pool_size


def _outcomes(sources: Counter, dead: list[dict], written: Counter) -> dict:
    """The manifest's counts by the shared rule (``outcomes.summarize``), from the data: examples and dead
    letters read, rows written, per source."""
    counted = Counter({(source, OUT, ""): n for source, n in written.items()})
    counted.update({(source, IN, ""): n for source, n in sources.items()})
    counted.update((d["source"], IN, "") for d in dead)
    counted.update((d["source"], DROPPED, d["reason"]) for d in dead)
    outcomes = summarize(list(counted.items()))
    outcomes.pop("facts")
    return outcomes


@dataclass
class _Mined:
    pool_size: int
    k: int
    index: dict
    baseline: float
    tally: MinerTally
    partitions: int
    shard_paths: list[str]
    written: Counter  # rows written per source
    embed_seconds: float
    search_seconds: float


def _embed_and_search(examples: ExampleStore, config: MineConfig, run: MineRunOptions, spec: EmbedderSpec,
                      work: Path, out_dir: Path, beam_args: list[str] | None) -> _Mined:
    """Pool and queries embedded on Beam workers, the index built and tuned here, the queries searched in one
    or more partitions, the rows written to the output shards in example order."""
    store = PoolStore(work / "pool")
    pool_size = _write_pool_texts(store, examples, config)
    write_text_file(work / "queries.arrow", ((q,) for block in examples.column("query") for q in block), ("text",))
    total = len(examples)
    blocks = pool_and_query_blocks(store.texts_path, pool_size, work / "queries.arrow", total, config, work)
    embed_seconds = embed_blocks(blocks, spec, config, beam_args, run.workers)
    store.attach_shards()
    queries = VectorShards(work / "queries")
    queries.attach_shards()

    k = min(config.range_end, pool_size)
    # the model is loaded here only for positives or labeled negatives that a separate --pool does not hold
    miner = Miner(config, lambda: TextEmbedder(replace(spec, threads=None)), store, same_query_positives(examples))
    with step("mine: build and tune the search index"):  # seconds to minutes at a million passages, no count
        miner.prepare_search(np.asarray(queries.shard(0), dtype=np.float32), k)
    writer = StreamingShardWriter(str(out_dir / "examples"), TRAINING_EXAMPLE, lambda row: row["example_id"],
                                  run.num_shards, run.row_group_size)
    written: Counter[str] = Counter()  # rows per source, for the manifest

    def add(row: dict) -> None:
        writer.add(row)
        written[row["source"]] += 1

    partitions = partition_blocks(len(queries.shards), run.search_partitions)
    t_search = time.perf_counter()
    if len(partitions) == 1:  # in this process, with the index already built
        with bar("mine: search", total, "query") as progress:
            for row in mine_blocks(miner, examples, queries, partitions[0]):
                add(row)
                progress.update()
        tally = miner.tally
    else:
        save_for_workers(miner, work)
        tally = MinerTally()
        search_partitions(partitions, work, config, spec, beam_args, add, tally, total, run.workers)
    paths = writer.close()
    return _Mined(pool_size, k, miner.search.describe(), miner.baseline, tally, len(partitions), paths,
                  written, embed_seconds, time.perf_counter() - t_search)


def run_mine(input_path: str | None, out: str, config: MineConfig | None = None,
             beam_args: list[str] | None = None, run: MineRunOptions | None = None) -> Manifest:
    """examples (scored pairs and/or labeled rows) -> pool and query embeddings on Beam workers (disk shards)
    -> index -> search in partitions -> guarded, seeded negatives -> training-example shards + manifest."""
    config, run = config or MineConfig(), run or MineRunOptions()  # validated on construction
    started = time.perf_counter()
    out_dir = Path(out)
    work = out_dir / "_work"
    shutil.rmtree(work, ignore_errors=True)
    examples, dead = _read_examples(input_path, config, work)
    model_name = config.model or _default_model(input_path)
    spec = embedder_spec(config, model_name, run.workers)

    mined = _embed_and_search(examples, config, run, spec, work, out_dir, beam_args)
    total, sources = len(examples), examples.source_counts()
    shutil.rmtree(work, ignore_errors=True)  # scratch; a failed run's goes with the stage runner's tmp folder
    tally, prompts = mined.tally, spec_prompts(spec)
    (out_dir / "dead_letters").mkdir(parents=True, exist_ok=True)  # listed in the manifest, so always there
    pq.write_table(rows_to_table(dead, DEAD_LETTER), out_dir / "dead_letters" / "part-00000-of-00001.parquet")
    manifest = Manifest(
        stage="mine",
        config={**config.to_dict(), **asdict(run), "model": model_name, "input": input_path},
        inputs=[p for p in [input_path, *config.labeled, config.pool] if p],
        outputs={"examples": {"path": str(out_dir / "examples"), "files": len(mined.shard_paths),
                              "rows": sum(mined.written.values()), "schema": "training_example"},
                 "dead_letters": {"path": str(out_dir / "dead_letters"), "files": 1, "rows": len(dead),
                                  "schema": "dead_letter"}},
        **_outcomes(sources, dead, mined.written),
        extra={
            "pool_size": mined.pool_size, "index": mined.index, "k": mined.k,
            "query_prompt": prompts["query"], "passage_prompt": prompts["passage"],
            "score_baseline": round(mined.baseline, 6),
            "guards_removed": {name: tally.guards[name] for name in GUARDS},
            "rows_short_of_negatives": tally.short_rows, "missing_negatives": tally.missing,
            "random_padding": tally.padded,
            "search_partitions": mined.partitions, "workers": run.workers,
            "embed_seconds": round(mined.embed_seconds, 2),
            "texts_embedded_per_second": round((mined.pool_size + total) / max(mined.embed_seconds, 1e-9), 1),
            "search_and_sample_seconds": round(mined.search_seconds, 2),
            "queries_per_second": round(total / max(mined.search_seconds, 1e-9), 1),
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
    manifest.write(str(out_dir))
    return manifest


def rank_range(text: str) -> tuple[int, int]:
    try:
        start, end = (int(x) for x in str(text).split("-"))
    except ValueError as exc:
        raise CmtpError(f"--range must be START-END, e.g. 10-210, not {text!r}") from exc
    return start, end


def _options(values: dict) -> dict:
    """``range: 10-210`` is ``range_start`` and ``range_end``; ``rows_per_group``, the old name of
    ``row_group_size`` (the other stages' name), still works for a release, with a warning."""
    if "range" in values:
        values["range_start"], values["range_end"] = rank_range(values.pop("range"))
    if "rows_per_group" in values:
        _warn_old_name()
        values.setdefault("row_group_size", values.pop("rows_per_group"))
    return values


@functools.cache  # once per process: a build reads a stage's options to validate them and again to run it
def _warn_old_name() -> None:
    from ..console import err

    err.print("warning: rows_per_group is an old name of row_group_size and goes in the next release",
              markup=False, highlight=False)


def _run_stage(inputs, out, config, beam_args, **run_options):
    search_on_gpu(config.use_gpu)  # before the embeddings, not after them
    run = runner_config_of(MineRunOptions, run_options)
    return run_mine(inputs[0] if inputs else None, out, config, beam_args, run)


def _outside_files(options: dict) -> list[str]:
    return [*listed(options.get("labeled"), "labeled"), options.get("pool")]


STAGE = Stage("mine", lambda: MineConfig, ("examples", "dead_letters"), _run_stage, normalize=_options,
              runner_options=RUN_OPTIONS, runner_config=lambda: MineRunOptions, inputs="optional",
              output_invariant=frozenset({"workers", "search_partitions"}), beam=True, external_inputs=_outside_files,
              local_only=True)
