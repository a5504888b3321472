"""``ScorePairs``: the score stage as one composite transform, and ``ThresholdRows``, the cut on its own (used again
by ``cmtp score --rethreshold`` to replay another threshold on stored scores without a model).

    row groups --read, check, cut--> inference batches --RunInference(pair handler)--> scored batches
          |                                                         --cut at the threshold, spill--> kept | rejected
          \\--> dead letters: nothing to score (``unscorable``), a null field (``missing_field``), a batch whose
                inference raised (``inference_error``)

An inference batch is a slice of ``inference_batch`` rows of one row group, read where it is scored: no pair
goes through a shuffle, and the elements RunInference receives are batches already (its own batching emits the
last batch of a bundle from ``finish_bundle``, which the DaskRunner drops). Every output is spilled for the shard
writers (``parquet_shards.spill``); each step emits the counts of what it read and made.
"""

from __future__ import annotations

import posixpath
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import RunInference

from cmtp.schemas import DEAD_LETTER, PAIR, SCORED_PAIR
from cmtp.schemas.validate import rows_to_table
from cmtp.transforms.common.dead_letters import DEAD, pair_dead_letter
from cmtp.transforms.common.multi_output import MultiOutput
from cmtp.transforms.common.outcomes import DROPPED, IN, OUT, counts
from cmtp.transforms.common.parquet_read import Unit, read_unit, split_nulls
from cmtp.transforms.common.parquet_shards import spill
from cmtp.transforms.embedding.handler import InferenceError

from .config import ScoreConfig
from .handler import SentencePairModelHandler

STAGE = "score"
KEPT, REJECTED, COUNTS = "kept", "rejected", "counts"


class ScoreResult(NamedTuple):
    kept: beam.PCollection  # spills of each output
    rejected: beam.PCollection
    dead: beam.PCollection
    counts: beam.PCollection  # Counters for the manifest


def spill_dead(rows: list[dict], scratch: str, name: str):
    """Dead-letter rows spilled for the dead-letter writer, as a tagged output (nothing when there are none)."""
    if rows:
        table = rows_to_table(rows, DEAD_LETTER, validate=False)  # spill() validates
        yield beam.pvalue.TaggedOutput(DEAD, spill(table, DEAD_LETTER, posixpath.join(scratch, "dead_letters",
                                                                                      f"{name}.arrow")))
        yield beam.pvalue.TaggedOutput(COUNTS, counts(table, DROPPED))


class _ReadBatchesFn(beam.DoFn):
    """A row group -> inference batches ``(name, table)`` of its scorable pairs; the others are dead letters."""

    def __init__(self, inference_batch: int, scratch: str):
        self.inference_batch, self.scratch = inference_batch, scratch

    def process(self, unit: Unit):
        table = read_unit(unit, PAIR)
        yield beam.pvalue.TaggedOutput(COUNTS, counts(table, IN))
        table, dead = split_nulls(table, PAIR, STAGE)
        blank = pc.or_(pc.equal(pc.utf8_trim_whitespace(table.column("title")), ""),
                       pc.equal(pc.utf8_trim_whitespace(table.column("passage")), ""))
        blank = blank.to_numpy(zero_copy_only=False)
        dead += [pair_dead_letter(STAGE, "unscorable", row, "empty title or passage")
                 for row in table.filter(pa.array(blank)).to_pylist()]
        yield from spill_dead(dead, self.scratch, unit.name)
        table = table.filter(pa.array(~blank))
        for number, start in enumerate(range(0, table.num_rows, self.inference_batch)):
            yield f"{unit.name}-{number:05d}", table.slice(start, self.inference_batch)


def threshold_rows(table: pa.Table, threshold: float) -> tuple[pa.Table, pa.Table]:
    """Scored rows (``SCORED_PAIR`` columns but the cut's) -> (kept, rejected) at ``threshold``: kept when the score
    >= threshold, both compared as the float32 values stored."""
    cut = np.float32(threshold)
    kept = table.column("score").to_numpy(zero_copy_only=False).astype(np.float32) >= cut
    table = table.drop_columns([c for c in ("threshold", "kept") if c in table.column_names])
    table = table.append_column("threshold", pa.array(np.full(table.num_rows, cut), pa.float32()))
    table = table.append_column("kept", pa.array(kept))
    return table.filter(pa.array(kept)), table.filter(pa.array(~kept))


def spill_scored(kept: pa.Table, rejected: pa.Table, scratch: str, name: str):
    """Kept and rejected rows spilled for their writers, with their counts (rejected: dropped below the threshold)."""
    for tag, table in ((KEPT, kept), (REJECTED, rejected)):
        if table.num_rows:
            yield beam.pvalue.TaggedOutput(tag, spill(table, SCORED_PAIR, posixpath.join(scratch, tag,
                                                                                         f"{name}.arrow")))
    yield beam.pvalue.TaggedOutput(COUNTS, counts(kept, OUT) + counts(rejected, DROPPED, "below_threshold"))


class _ScoredRowsFn(beam.DoFn):
    """A scored batch -> kept and rejected spills; a batch whose inference raised -> its dead letters."""

    def __init__(self, config: ScoreConfig, scorer_hash: str, scratch: str):
        self.config, self.scorer_hash, self.scratch = config, scorer_hash, scratch
        self.counter = Metrics.counter(STAGE, "pairs_scored")

    def process(self, prediction):
        name, table = prediction.example
        self.counter.inc(table.num_rows)
        if isinstance(prediction.inference, InferenceError):
            yield from spill_dead([pair_dead_letter(STAGE, "inference_error", row, str(prediction.inference))
                                   for row in table.to_pylist()], self.scratch, name)
            return
        n = table.num_rows
        scored = (table.append_column("score", pa.array(np.asarray(prediction.inference, dtype=np.float32)))
                  .append_column("scorer", pa.array([self.config.model] * n, pa.string()))
                  .append_column("scorer_hash", pa.array([self.scorer_hash] * n, pa.string())))
        yield from spill_scored(*threshold_rows(scored, self.config.threshold), self.scratch, name)


class ScorePairs(beam.PTransform):
    """Row-group units -> :class:`ScoreResult` (spills under ``scratch``)."""

    def __init__(self, config: ScoreConfig, scorer_hash: str, scratch: str, progress_dir: str | None = None):
        super().__init__()
        self.config, self.scorer_hash, self.scratch, self.progress_dir = config, scorer_hash, scratch, progress_dir

    def expand(self, units):
        c = self.config
        read = units | "ReadBatches" >> MultiOutput(_ReadBatchesFn(c.inference_batch, self.scratch), DEAD, COUNTS,
                                                    main="batches")
        scored = (
            read.batches
            | "AsOneElementBatches" >> beam.Map(lambda item: [item])  # RunInference's batch is the element itself
            | "RunInference" >> RunInference(SentencePairModelHandler(c, self.progress_dir))
            | "ToRows" >> MultiOutput(_ScoredRowsFn(c, self.scorer_hash, self.scratch),
                                      KEPT, REJECTED, DEAD, COUNTS, main="none")
        )
        dead = (read[DEAD], scored[DEAD]) | "AllDead" >> beam.Flatten()
        tallies = (read[COUNTS], scored[COUNTS]) | "AllCounts" >> beam.Flatten()
        return ScoreResult(scored[KEPT], scored[REJECTED], dead, tallies)


class _ThresholdFn(beam.DoFn):
    """A unit of stored scores (kept or rejected) -> kept and rejected spills at another threshold."""

    def __init__(self, threshold: float, scratch: str):
        self.threshold, self.scratch = threshold, scratch

    def process(self, unit: Unit):
        table = read_unit(unit, SCORED_PAIR)
        yield beam.pvalue.TaggedOutput(COUNTS, counts(table, IN))
        yield from spill_scored(*threshold_rows(table, self.threshold), self.scratch, unit.name)


class _CarryDeadFn(beam.DoFn):
    """A unit of stored dead letters -> the same rows spilled again (inputs and drops of the replay)."""

    def __init__(self, scratch: str):
        self.scratch = scratch

    def process(self, unit: Unit):
        table = read_unit(unit, DEAD_LETTER)
        yield beam.pvalue.TaggedOutput(COUNTS, counts(table, IN) + counts(table, DROPPED))
        if table.num_rows:
            yield beam.pvalue.TaggedOutput(DEAD, spill(table, DEAD_LETTER, posixpath.join(
                self.scratch, "dead_letters", f"carried-{unit.name}.arrow"), validate=False))


class ThresholdRows(beam.PTransform):
    """(units of scored rows, units of dead letters) -> :class:`ScoreResult` at ``threshold``."""

    def __init__(self, threshold: float, scratch: str):
        super().__init__()
        self.threshold, self.scratch = threshold, scratch

    def expand(self, inputs):
        scored_units, dead_units = inputs
        cut = scored_units | "Threshold" >> MultiOutput(_ThresholdFn(self.threshold, self.scratch), KEPT, REJECTED,
                                                        COUNTS, main="none")
        carried = dead_units | "CarryDead" >> MultiOutput(_CarryDeadFn(self.scratch), DEAD, COUNTS, main="none")
        tallies = (cut[COUNTS], carried[COUNTS]) | "AllCounts" >> beam.Flatten()
        return ScoreResult(cut[KEPT], cut[REJECTED], carried[DEAD], tallies)
