"""``NearDedup``: the dedup stage as one composite transform.

    pairs -> (id, text) --batch--> MinHash band keys --group--> bucket edges --distinct--> [exact Jaccard]
          -> connected components (large/small star) -> label every pair -> one representative per cluster
"""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam

from cmtp.transforms.common.dead_letters import DEAD
from cmtp.transforms.common.multi_output import MultiOutput

from .components import ConnectedComponents
from .config import DedupConfig
from .dofns import (
    AttachFirstTextFn,
    BandKeysFn,
    KeepRepresentativeFn,
    LabelPairFn,
    VerifyEdgesFn,
    bucket_edges,
    size_bucket,
)


class DedupResult(NamedTuple):
    kept: beam.PCollection
    dead: beam.PCollection
    facts: beam.PCollection  # (name, key) tallies for the manifest
    violations: beam.PCollection  # 0 when the components converged


class NearDedup(beam.PTransform):
    def __init__(self, config: DedupConfig, bands: int, rows: int, progress_dir: str | None = None):
        super().__init__()
        self.config, self.bands, self.rows, self.progress_dir = config, bands, rows, progress_dir

    def expand(self, pairs):
        c = self.config
        texts = pairs | "Texts" >> beam.Map(lambda p: (p["pair_id"], c.text_of(p)))
        edges = (
            texts
            | "Batch" >> beam.BatchElements(min_batch_size=64, max_batch_size=2048)
            | "BandKeys" >> beam.ParDo(BandKeysFn(c, self.bands, self.rows, self.progress_dir))
            | "Buckets" >> beam.GroupByKey()
            | "BucketEdges" >> beam.FlatMap(bucket_edges, all_pairs_up_to=c.max_bucket_all_pairs)
            | "DistinctEdges" >> beam.Distinct()
        )
        facts = [edges | "CountCandidates" >> beam.Map(lambda e: ("edges", "candidate"))]
        if c.verify:
            checked = (
                {"edges": edges, "text": texts}
                | "JoinFirst" >> beam.CoGroupByKey()
                | "AttachFirst" >> beam.ParDo(AttachFirstTextFn())
            )
            verified = (
                {"edges": checked, "text": texts}
                | "JoinSecond" >> beam.CoGroupByKey()
                | "Verify" >> MultiOutput(VerifyEdgesFn(c), "rejected", main="kept")
            )
            edges = verified.kept
            facts.append(verified.rejected | "CountRejected" >> beam.Map(lambda e: ("edges", "rejected_by_jaccard")))
        components, violations = edges | "Components" >> ConnectedComponents(c.cc_rounds)

        labelled = (
            {"pair": pairs | "ById" >> beam.Map(lambda p: (p["pair_id"], p)), "label": components}
            | "JoinLabels" >> beam.CoGroupByKey()
            | "Label" >> MultiOutput(LabelPairFn(), "singleton", main="clustered")
        )
        clusters = (
            labelled.clustered
            | "ByCluster" >> beam.GroupByKey()
            | "Representative" >> MultiOutput(KeepRepresentativeFn(c.policy), DEAD, main="kept")
        )
        kept = (clusters.kept, labelled.singleton) | "AllKept" >> beam.Flatten()
        facts.append(kept | "ClusterSizes" >> beam.Map(lambda p: ("cluster_sizes", size_bucket(p["cluster_size"]))))
        return DedupResult(kept, clusters[DEAD], facts | "AllFacts" >> beam.Flatten(), violations)

