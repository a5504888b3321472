"""``ExtractPairs``: the extract stage as one composite transform.

    files --ReadRecords--> raw documents --CleanPair--> pairs --ExactDedup--> pairs
                 \\--> dead letters            \\--> dead letters, pretrain-only passages, cleaning facts
                                                                                 \\--> dead letters
"""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
from apache_beam.io import fileio

from cmtp.transforms.common.dead_letters import DEAD
from cmtp.transforms.common.multi_output import MultiOutput

from .config import ExtractConfig
from .dofns import CLEANING, PRETRAIN_ONLY, CleanPairFn, ReadRecordsFn, SourceSpec
from .exact_dedup import ExactDedup


class ExtractResult(NamedTuple):
    documents: beam.PCollection  # raw documents read (for counting inputs)
    read_dead: beam.PCollection  # records that could not be read (also inputs)
    pairs: beam.PCollection
    pretrain: beam.PCollection
    dead: beam.PCollection  # every dead letter of the stage, read_dead included
    cleaning: beam.PCollection  # ("cleaning", step) facts: which cleaning steps changed a document


class ExtractPairs(beam.PTransform):
    def __init__(self, sources: list[SourceSpec], config: ExtractConfig, progress_dir: str | None = None):
        super().__init__()
        self.sources, self.config, self.progress_dir = sources, config, progress_dir

    def expand(self, pbegin):
        documents, read_dead = [], []
        for i, spec in enumerate(self.sources):
            read = (
                pbegin
                | f"Match[{i}:{spec.name}]" >> fileio.MatchFiles(spec.pattern)
                | f"Open[{i}:{spec.name}]" >> fileio.ReadMatches()
                | f"Read[{i}:{spec.name}]" >> MultiOutput(ReadRecordsFn(spec, self.progress_dir), DEAD,
                                                                 main="docs")
            )
            documents.append(read.docs)
            read_dead.append(read[DEAD])
        # Files are read whole by one worker each; a reshuffle spreads the costly cleaning over all workers
        # even when one big file holds most records.
        documents = documents | "AllDocuments" >> beam.Flatten()
        if self.config.rebalance:
            documents = documents | "Rebalance" >> beam.Reshuffle()
        read_dead = read_dead | "AllReadDead" >> beam.Flatten()

        cleaned = documents | "CleanPair" >> MultiOutput(CleanPairFn(self.config), DEAD, PRETRAIN_ONLY,
                                                                  CLEANING, main="pairs")
        pairs, dead = cleaned.pairs, [read_dead, cleaned[DEAD]]
        if self.config.dedup_pair or self.config.dedup_passage:
            pairs, dup = pairs | "ExactDedup" >> ExactDedup(by_passage=self.config.dedup_passage)
            dead.append(dup)

        pretrain = (
            pairs | "PairPassages" >> beam.Map(lambda p: {"text_id": p["pair_id"], "source": p["source"],
                                                            "text": p["passage"]}),
            cleaned[PRETRAIN_ONLY],
        ) | "AllPretrain" >> beam.Flatten()
        return ExtractResult(documents, read_dead, pairs, pretrain, dead | "AllDead" >> beam.Flatten(),
                             cleaned[CLEANING])
