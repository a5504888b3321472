"""``NearDedup``: the dedup stage as one composite transform.

    row groups --sign--> band hashes by partition --group--> bucket edges --group--> [exact Jaccard]
      -> connected components (large/small star) -> members with their rank, by component -> one representative
      -> decisions by row group --join with the row groups--> kept rows | near duplicates

Rows are numbered by their place in the input; every step's element is a partition number and the paths of the
files it reads (``dofns.py``), so no text and no row goes through a shuffle.
"""

from __future__ import annotations

import posixpath
from typing import NamedTuple

import apache_beam as beam

from cmtp.transforms.common.dead_letters import DEAD
from cmtp.transforms.common.multi_output import MultiOutput
from cmtp.transforms.common.parquet_read import Unit

from .components import ConnectedComponents
from .config import DedupConfig
from .dofns import COUNTS, NODES, BucketEdgesFn, DecideFn, FinalizeFn, JoinNodesFn, SignFn, VerifyFn


class DedupResult(NamedTuple):
    kept: beam.PCollection  # spills of the kept pairs
    dead: beam.PCollection  # spills of the dead letters
    counts: beam.PCollection  # Counters: in, out, dropped, facts
    violations: beam.PCollection  # 0 when the components converged (one count per partition)


class NearDedup(beam.PTransform):
    def __init__(self, config: DedupConfig, bands: int, rows: int, units: list[Unit], parts: int, folder: str,
                 progress_dir: str | None = None):
        super().__init__()
        self.config, self.bands, self.rows, self.parts, self.folder = config, bands, rows, parts, folder
        self.offsets = [u.offset for u in units]
        self.progress_dir = progress_dir

    def expand(self, units):
        c, parts, folder = self.config, self.parts, self.folder
        candidates = (
            units
            | "Sign" >> beam.ParDo(SignFn(c, self.bands, self.rows, parts, folder, self.progress_dir))
            | "Buckets" >> beam.GroupByKey()
            | "BucketEdges" >> beam.ParDo(BucketEdgesFn(c.max_bucket_all_pairs, parts, folder, self.progress_dir))
        )
        verified = (candidates
                    | "ByFirstNode" >> beam.GroupByKey()
                    | "Verify" >> MultiOutput(VerifyFn(c, self.offsets, parts, folder, self.progress_dir), NODES,
                                              COUNTS, main="edges"))
        labels, violations = verified.edges | "Components" >> ConnectedComponents(
            c.cc_rounds, parts, posixpath.join(folder, "components"), self.progress_dir)
        decisions = (
            {"labels": labels, "nodes": verified[NODES]}
            | "JoinRanks" >> beam.CoGroupByKey()
            | "ByComponent" >> beam.ParDo(JoinNodesFn(parts, folder, self.progress_dir))
            | "Members" >> beam.GroupByKey()
            | "Decide" >> beam.ParDo(DecideFn(c.policy, self.offsets, folder, self.progress_dir))
        )
        final = (
            {"unit": units | "ByIndex" >> beam.Map(lambda u: (u.index, u)), "decisions": decisions}
            | "JoinUnits" >> beam.CoGroupByKey()
            | "Finalize" >> MultiOutput(FinalizeFn(folder, self.progress_dir), DEAD, COUNTS, main="kept")
        )
        tallies = (verified[COUNTS], final[COUNTS]) | "AllCounts" >> beam.Flatten()
        return DedupResult(final.kept, final[DEAD], tallies, violations)
