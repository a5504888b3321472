"""The score pipeline: pairs -> ``kept/`` and ``rejected/`` scored pairs, ``dead_letters/``, manifest."""

from __future__ import annotations

import time

import apache_beam as beam

from schemas import DEAD_LETTER, SCORED_PAIR, Manifest
from trainer.models import resolve_model, weights_fingerprint
from transforms.common.dead_letters import dead_letter_sort_key
from transforms.common.outcomes import CountOutcomes
from transforms.score.config import ScoreConfig
from transforms.score.ptransform import ScorePairs

from .beam_runner import make_pipeline
from .extract import ShardOptions
from .outputs import input_glob, match_files, pop_outcomes, prepare_output, summarize_output

OUTPUTS = {"kept": "scored_pair", "rejected": "scored_pair", "dead_letters": "dead_letter"}


def run_score(
    input_path: str,
    out: str,
    config: ScoreConfig | None = None,
    shards: ShardOptions | None = None,
    beam_args: list[str] | None = None,
    workers: int = 1,
) -> Manifest:
    config, shards = config or ScoreConfig(), shards or ShardOptions()
    pattern = input_glob(input_path, "pairs")
    files = match_files(pattern)
    resolved = resolve_model(config.model, allow_network=config.allow_network)
    scorer_hash = weights_fingerprint(resolved.path)
    prepare_output(out, list(OUTPUTS))
    started = time.perf_counter()
    with make_pipeline(beam_args, workers) as p:
        pairs = p | "ReadPairs" >> beam.io.ReadFromParquet(pattern)
        result = pairs | "Score" >> ScorePairs(config, scorer_hash)
        key = lambda r: r["pair_id"]  # noqa: E731
        result.kept | "WriteKept" >> shards.writer(f"{out}/kept", SCORED_PAIR, key)
        result.rejected | "WriteRejected" >> shards.writer(f"{out}/rejected", SCORED_PAIR, key)
        result.dead | "WriteDead" >> shards.writer(f"{out}/dead_letters", DEAD_LETTER, dead_letter_sort_key)
        drops = (
            result.dead,
            result.rejected
            | "RejectedEvents" >> beam.Map(lambda r: {"source": r["source"], "reason": "below_threshold"}),
        ) | "Drops" >> beam.Flatten()
        (pairs, result.kept, drops) | "Count" >> CountOutcomes(out)
    seconds = time.perf_counter() - started
    outcomes = pop_outcomes(out)
    outcomes.pop("facts", None)
    manifest = Manifest(
        stage="score",
        config={**config.to_dict(), "input": input_path, "shards": vars(shards), "workers": workers,
                "beam_args": beam_args or []},
        inputs=files,
        outputs={name: summarize_output(out, name, schema) for name, schema in OUTPUTS.items()},
        extra={"scorer": {"name": config.model, "path": str(resolved.path), "weights_sha256": scorer_hash},
               "threshold": config.threshold, "seconds": round(seconds, 2),
               "pairs_per_second": round(outcomes["count_in"] / max(seconds, 1e-9), 2)},
        **outcomes,
    )
    manifest.write(out)
    return manifest
