"""The score pipeline: pairs -> ``kept/`` and ``rejected/`` scored pairs, ``dead_letters/``, manifest.

Also the replay of another threshold on stored scores (``run_rethreshold``: no model, seconds instead of the
scoring time) and scoring towards a target keep rate (score once, then replay the threshold that keeps it).
"""

from __future__ import annotations

import time

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from cmtp.schemas import DEAD_LETTER, PAIR, SCORED_PAIR, CmtpError, Manifest
from cmtp.schemas.ranges import check_value, flag_name
from cmtp.transforms.common import scratch
from cmtp.transforms.common.outcomes import CountOutcomes
from cmtp.transforms.common.parquet_read import PAIR_COLUMNS, input_units
from cmtp.transforms.common.parquet_shards import SHARD_OPTIONS, ShardOptions
from cmtp.transforms.common.paths import parquet_files
from cmtp.transforms.embedding import resolve_model, weights_fingerprint
from cmtp.transforms.score.config import ScoreConfig
from cmtp.transforms.score.ptransform import ScorePairs, ScoreResult, ThresholdRows

from .beam_runner import join_ends, pipeline_run
from .outputs import pop_outcomes, prepare_output, summarize_output
from .progress import Phase, watch
from .stages import Stage, runner_config_of

OUTPUTS = {"kept": "scored_pair", "rejected": "scored_pair", "dead_letters": "dead_letter"}


def _write_outputs(result: ScoreResult, out: str, shards: ShardOptions, progress: str | None = None) -> None:
    pieces = f"{scratch.scratch_dir(out)}/pieces"
    writes = (result.kept | "WriteKept" >> shards.writer(f"{out}/kept", SCORED_PAIR, f"{pieces}/kept", progress),
              result.rejected | "WriteRejected" >> shards.writer(f"{out}/rejected", SCORED_PAIR, f"{pieces}/rejected",
                                                                 progress),
              result.dead | "WriteDead" >> shards.writer(f"{out}/dead_letters", DEAD_LETTER, f"{pieces}/dead",
                                                         progress))
    counted = result.counts | "Count" >> CountOutcomes(out)
    join_ends(*writes, counted)


def _manifest(out: str, config: dict, inputs: list[str], extra: dict, seconds: float, work: str) -> Manifest:
    """The stage's manifest; its rate names the work it timed (``pairs_scored_per_second`` for a scoring run,
    ``pairs_replayed_per_second`` for a re-cut of existing scores)."""
    outcomes = pop_outcomes(out)
    outcomes.pop("facts", None)
    manifest = Manifest(
        stage="score", config=config, inputs=inputs,
        outputs={name: summarize_output(out, name, schema) for name, schema in OUTPUTS.items()},
        extra={**extra, "seconds": round(seconds, 2),
               f"pairs_{work}_per_second": round(outcomes["count_in"] / max(seconds, 1e-9), 2)},
        **outcomes,
    )
    manifest.write(out)
    return manifest


def run_score(
    input_path: str,
    out: str,
    config: ScoreConfig | None = None,
    shards: ShardOptions | None = None,
    beam_args: list[str] | None = None,
    workers: int = 1,
    target_keep_rate: float | None = None,
) -> Manifest:
    """Score ``input_path``'s pairs into ``out``. With ``target_keep_rate`` the pairs are scored once into a
    scratch directory, the threshold that keeps that share is read off the scores (as ``cmtp audit`` does) and
    replayed into ``out``."""
    config, shards = config or ScoreConfig(), shards or ShardOptions()
    if target_keep_rate is not None:
        return _score_to_keep_rate(input_path, out, config, shards, beam_args, workers, target_keep_rate)
    files = parquet_files(input_path, ("pairs",))
    resolved = resolve_model(config.model, allow_network=config.allow_network)
    scorer_hash = weights_fingerprint(resolved.path)
    units = input_units(files, PAIR, PAIR_COLUMNS)
    started = time.perf_counter()
    prepare_output(out, list(OUTPUTS))
    work = scratch.scratch_dir(out)
    # the workers' counts drawn as one bar here (local runner); Beam's counter cmtp score/pairs_scored elsewhere
    phases = [Phase("load model", 1, "model"), Phase("score", 2 * sum(u.rows for u in units), "text"),
              Phase("write", sum(u.rows for u in units), "row")]
    with watch("score", None, "pair", beam_args, phases) as progress, pipeline_run(beam_args, workers) as p:
        scored = (p | "RowGroups" >> beam.Create(units, reshuffle=False)
                  | "Score" >> ScorePairs(config, scorer_hash, work, progress))
        _write_outputs(scored, out, shards, progress)
    scratch.remove(work)
    return _manifest(
        out, {**config.to_dict(), "input": input_path, "shards": vars(shards), "workers": workers,
              "beam_args": beam_args or []}, files,
        {"scorer": {"name": config.model, "path": str(resolved.path), "weights_sha256": scorer_hash,
                    "engine": config.engine},
         "threshold": config.threshold},
        time.perf_counter() - started, "scored")


def run_rethreshold(
    scored: str,
    out: str,
    threshold: float,
    shards: ShardOptions | None = None,
    beam_args: list[str] | None = None,
    workers: int = 1,
    extra: dict | None = None,
) -> Manifest:
    """Re-cut a score stage's output (``kept/`` + ``rejected/``) at ``threshold`` into ``out``, with the
    input's dead letters carried over, so the manifest reconciles against the same pairs as the original."""
    shards = shards or ShardOptions()
    if FileSystems.join(scored, "") == FileSystems.join(out, ""):
        raise CmtpError("--rethreshold writes a new output: give an --out other than the scored input")
    try:
        source = Manifest.read(scored)
    except CmtpError as exc:
        raise CmtpError(f"{scored} is not a cmtp score output (no manifest): {exc}") from exc
    if source.stage != "score":
        raise CmtpError(f"{scored} is the output of {source.stage}, not of score")
    present = {}  # output folder -> its Parquet files, for the folders the score stage wrote any to
    for sub in OUTPUTS:
        try:
            present[sub] = parquet_files(FileSystems.join(scored, sub))
        except CmtpError:
            continue
    files = [f for found in present.values() for f in found]
    scored_units = input_units([f for sub, found in present.items() if sub != "dead_letters" for f in found],
                               SCORED_PAIR)
    dead_units = input_units(present.get("dead_letters", []), DEAD_LETTER)
    started = time.perf_counter()
    prepare_output(out, list(OUTPUTS))
    work = scratch.scratch_dir(out)
    with pipeline_run(beam_args, workers) as p:
        units = (p | "Scored" >> beam.Create(scored_units, reshuffle=False),
                 p | "Dead" >> beam.Create(dead_units, reshuffle=False))
        _write_outputs(units | "Threshold" >> ThresholdRows(threshold, work), out, shards)
    scratch.remove(work)
    config = {**source.config, "threshold": threshold, "rethreshold_of": scored, "shards": vars(shards),
              "workers": workers, "beam_args": beam_args or []}
    return _manifest(out, config, files,
                     {**{k: v for k, v in source.extra.items() if k == "scorer"}, "threshold": threshold,
                      "replayed_from": {"path": scored, "threshold": source.extra.get("threshold")}, **(extra or {})},
                     time.perf_counter() - started, "replayed")


def _score_to_keep_rate(input_path, out, config, shards, beam_args, workers, rate) -> Manifest:
    from .audit.stats import ALL, collect, open_scored

    check_value("--target-keep-rate", rate, gt=0, le=1)
    scratch = FileSystems.join(out, "_all_scores")
    first = run_score(input_path, scratch, config, shards, beam_args, workers)
    stats = collect(open_scored([scratch]), np.array([config.threshold], dtype=np.float32))
    threshold = float(stats[ALL].threshold_for_keep_rate(rate))
    manifest = run_rethreshold(scratch, out, threshold, shards, beam_args, workers, {"target_keep_rate": rate})
    FileSystems.delete([scratch])
    # the scoring run's time and rate, the replay's, and the two together
    replay = manifest.extra["seconds"]
    manifest.extra.update(scoring_seconds=first.extra["seconds"], replay_seconds=replay,
                          pairs_scored_per_second=first.extra["pairs_scored_per_second"],
                          seconds=round(first.extra["seconds"] + replay, 2))
    manifest.config.update(rethreshold_of=None, input=input_path, target_keep_rate=rate)
    manifest.extra.pop("replayed_from")  # the scratch scores are gone: this output is the only copy
    manifest.inputs = first.inputs
    manifest.write(out)
    return manifest


def _run_stage(inputs, out, config, beam_args, *, workers=1, target_keep_rate=None, rethreshold=None, **shards):
    shard_options = runner_config_of(ShardOptions, shards)
    if rethreshold is not None:
        check_value("--rethreshold", rethreshold, "scores are cosines", ge=-1, le=1)
        return run_rethreshold(inputs[0], out, rethreshold, shard_options, beam_args, workers)
    return run_score(inputs[0], out, config, shard_options, beam_args, workers, target_keep_rate)


def _one_cut(values: dict) -> dict:
    """threshold, target_keep_rate and rethreshold each set the cut: given two, one silently won."""
    given = [name for name in ("threshold", "target_keep_rate", "rethreshold") if values.get(name) is not None]
    if len(given) > 1:
        raise CmtpError(f"{' and '.join(map(flag_name, given))} each set the cut: give one")
    return values


STAGE = Stage("score", lambda: ScoreConfig, tuple(OUTPUTS), _run_stage, normalize=_one_cut,
              runner_options=("workers", "target_keep_rate", "rethreshold", *SHARD_OPTIONS),
              runner_config=lambda: ShardOptions, output_invariant=frozenset({"workers"}), beam=True)
