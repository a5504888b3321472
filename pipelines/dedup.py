"""The dedup pipeline: pairs -> near-duplicate-free ``pairs/`` with cluster ids, ``dead_letters/``, manifest."""

from __future__ import annotations

import dataclasses
import time

import apache_beam as beam

from cmtp.schemas import DEAD_LETTER, PAIR, CmtpError, Manifest
from cmtp.transforms.common import scratch
from cmtp.transforms.common.outcomes import CountOutcomes, fact
from cmtp.transforms.common.parquet_read import PAIR_COLUMNS, Unit, input_units
from cmtp.transforms.common.parquet_shards import SHARD_OPTIONS, ShardOptions
from cmtp.transforms.common.paths import parquet_files
from cmtp.transforms.dedup.config import DedupConfig
from cmtp.transforms.dedup.lsh import collision_probability
from cmtp.transforms.dedup.ptransform import NearDedup

from .beam_runner import join_ends, pipeline_run
from .outputs import pop_outcomes, prepare_output, summarize_output
from .progress import Phase, watch
from .stages import Stage, runner_config_of

OUTPUTS = {"pairs": "pair", "dead_letters": "dead_letter"}
MAX_PASSES = 4
STAGE_DATA = ("pairs",)  # the data subfolder of an extract or dedup output


ROWS_PER_PARTITION = 200_000  # rows whose band hashes one step sorts at a time (16 bands: ~50 MB of keys)


def partition_count(rows: int) -> int:
    """Partitions of the band hashes, candidate edges and components: from the input's size alone (never the
    worker count), so that memory per step stays bounded as the input grows. The outputs do not depend on it."""
    return max(4, min(4096, -(-rows // ROWS_PER_PARTITION)))


def _build(p, units: list[Unit], out: str, config: DedupConfig, bands: int, rows: int, shards: ShardOptions,
           progress: str | None):
    work = scratch.scratch_dir(out)
    parts = partition_count(sum(u.rows for u in units))
    result = (p | "RowGroups" >> beam.Create(units, reshuffle=False)
              | "NearDedup" >> NearDedup(config, bands, rows, units, parts, work, progress))
    pieces = f"{work}/pieces"
    writes = (result.kept | "WritePairs" >> shards.writer(f"{out}/pairs", PAIR, f"{pieces}/pairs", progress),
              result.dead | "WriteDead" >> shards.writer(f"{out}/dead_letters", DEAD_LETTER, f"{pieces}/dead",
                                                         progress))
    violations = (result.violations
                  | "AllViolations" >> beam.CombineGlobally(sum)
                  | "ViolationFact" >> beam.Map(lambda v: fact("cc_violations", v)))
    counted = (result.counts, violations) | "Count" >> CountOutcomes(out)
    join_ends(*writes, counted)


def run_dedup(
    input_path: str,
    out: str,
    config: DedupConfig | None = None,
    shards: ShardOptions | None = None,
    beam_args: list[str] | None = None,
    workers: int = 1,
) -> Manifest:
    config, shards = config or DedupConfig(), shards or ShardOptions()
    files = parquet_files(input_path, STAGE_DATA)
    bands, rows = config.lsh_params()
    started = time.perf_counter()
    passes = 0
    while True:
        passes += 1
        prepare_output(out, list(OUTPUTS))
        units = input_units(files, PAIR, PAIR_COLUMNS)
        rows_in = sum(u.rows for u in units)
        # the partition phases count partitions done, of those that hold data (not known ahead: no total)
        phases = [Phase("sign", rows_in, "pair"), Phase("group", None, "partition step"),
                  Phase("components", None, "partition step"), Phase("decide", None, "partition step"),
                  Phase("finalize", rows_in, "pair"), Phase("write", rows_in, "row")]
        with watch("dedup", None, "pair", beam_args, phases) as progress, pipeline_run(beam_args, workers) as p:
            _build(p, units, out, config, bands, rows, shards, progress)
        scratch.remove(scratch.scratch_dir(out))
        outcomes = pop_outcomes(out)
        facts = outcomes.pop("facts")
        # tallied as {value: times}: the one value is the count of edges still joining two labels (0: converged)
        violations = max((int(value) for value in facts.get("cc_violations", {})), default=0)
        if violations == 0:
            break
        if passes == MAX_PASSES:
            raise CmtpError(f"connected components did not converge in {config.cc_rounds} rounds")
        # not converged: the same deterministic pipeline with twice the rounds
        config = dataclasses.replace(config, cc_rounds=config.cc_rounds * 2)
    seconds = time.perf_counter() - started
    edges = facts.get("edges", {})
    manifest = Manifest(
        stage="dedup",
        config={**config.to_dict(), "input": input_path, "shards": vars(shards), "workers": workers,
                "beam_args": beam_args or []},
        inputs=files,
        outputs={name: summarize_output(out, name, schema) for name, schema in OUTPUTS.items()},
        extra={
            "lsh": {"bands": bands, "rows": rows, "num_perm": config.num_perm, "threshold": config.threshold,
                    "weights_fp_fn": list(config.lsh_weights()),
                    "p_collide_at_threshold": round(collision_probability(config.threshold, bands, rows), 4),
                    "p_collide_at_half": round(collision_probability(0.5, bands, rows), 4)},
            "candidate_edges": edges.get("candidate", 0),
            "edges_rejected_by_jaccard": edges.get("rejected_by_jaccard", 0),
            "cluster_sizes": dict(sorted(facts.get("cluster_sizes", {}).items(),
                                         key=lambda kv: int(kv[0].split("-")[0]))),
            "cc_rounds": config.cc_rounds,
            "passes": passes,
            "seconds": round(seconds, 2),
        },
        **outcomes,
    )
    manifest.write(out)
    return manifest


def _run_stage(inputs, out, config, beam_args, *, workers=1, **shards):
    return run_dedup(inputs[0], out, config, runner_config_of(ShardOptions, shards), beam_args, workers)


STAGE = Stage("dedup", lambda: DedupConfig, tuple(OUTPUTS), _run_stage, runner_options=("workers", *SHARD_OPTIONS),
              runner_config=lambda: ShardOptions, output_invariant=frozenset({"workers"}), beam=True)
