"""``ExtractPairs``: the extract stage as one composite transform.

    files --ReadRecords--> batches of raw documents --CleanBatch--> pairs (scratch) + their keys --group keys-->
          exact duplicates --join with the batches--> pairs without them
                     \\--> dead letters, pretraining-only passages, counts at every step

A batch's rows are read, cleaned and written in the step that holds them; what crosses a shuffle is the batch's
name and paths, and the exact dedup's keys (``exact_dedup.py``), so memory is bounded by a batch, not the corpus.
"""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
from apache_beam.io import fileio

from cmtp.transforms.common.dead_letters import DEAD
from cmtp.transforms.common.multi_output import MultiOutput

from .config import ExtractConfig
from .dofns import (
    COUNTS,
    KEYS,
    PAIRS,
    PRETRAIN,
    CleanBatchFn,
    DropDuplicatesFn,
    ExactDuplicatesFn,
    ReadRecordsFn,
    SourceSpec,
    stash_documents,
    unstash_documents,
)

KEY_PARTITIONS = 16  # partitions of the exact-dedup keys; the output does not depend on it


class ExtractResult(NamedTuple):
    pairs: beam.PCollection  # spills of each output
    pretrain: beam.PCollection
    dead: beam.PCollection
    counts: beam.PCollection  # Counters: in, out, dropped, cleaning facts


class ExtractPairs(beam.PTransform):
    def __init__(self, sources: list[SourceSpec], config: ExtractConfig, folder: str, progress_dir: str | None = None):
        super().__init__()
        self.sources, self.config, self.folder, self.progress_dir = sources, config, folder, progress_dir

    def expand(self, pbegin):
        c, folder = self.config, self.folder
        batches = [
            pbegin
            | f"Match[{i}:{spec.name}]" >> fileio.MatchFiles(spec.pattern)
            | f"Open[{i}:{spec.name}]" >> fileio.ReadMatches()
            | f"Read[{i}:{spec.name}]" >> beam.ParDo(ReadRecordsFn(spec, self.progress_dir, i))
            for i, spec in enumerate(self.sources)
        ] | "AllBatches" >> beam.Flatten()
        if c.rebalance:  # files are read whole by one worker each: spread the costly cleaning over all workers
            batches = (batches
                       | "Stash" >> beam.Map(stash_documents, folder)
                       | "Rebalance" >> beam.Reshuffle()
                       | "Unstash" >> beam.Map(unstash_documents))
        cleaned = batches | "CleanBatch" >> MultiOutput(CleanBatchFn(c, folder, KEY_PARTITIONS), PAIRS, KEYS,
                                                        PRETRAIN, DEAD, COUNTS, main="ready")
        pairs, pretrain, dead, tallies = [cleaned.ready], [cleaned[PRETRAIN]], [cleaned[DEAD]], [cleaned[COUNTS]]
        if c.dedup_pair or c.dedup_passage:
            decisions = (cleaned[KEYS]
                         | "GroupKeys" >> beam.GroupByKey()
                         | "ExactDuplicates" >> beam.ParDo(ExactDuplicatesFn(c.dedup_passage, folder)))
            deduped = (
                {"pairs": cleaned[PAIRS], "decisions": decisions}
                | "JoinBatches" >> beam.CoGroupByKey()
                | "DropDuplicates" >> MultiOutput(DropDuplicatesFn(folder), PRETRAIN, DEAD, COUNTS, main="pairs")
            )
            pairs.append(deduped.pairs)
            pretrain.append(deduped[PRETRAIN])
            dead.append(deduped[DEAD])
            tallies.append(deduped[COUNTS])
        return ExtractResult(pairs | "AllPairs" >> beam.Flatten(), pretrain | "AllPretrain" >> beam.Flatten(),
                             dead | "AllDead" >> beam.Flatten(), tallies | "AllCounts" >> beam.Flatten())
