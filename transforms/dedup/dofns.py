"""The dedup stage's DoFns: band keys from signatures, candidate edges from buckets, exact-Jaccard checks,
and the choice of one representative per cluster."""

from __future__ import annotations

import itertools

import apache_beam as beam
import numpy as np

from cmtp.transforms.common.dead_letters import DEAD, pair_dead_letter
from cmtp.transforms.common.progress import ProgressCounter

from .config import DedupConfig
from .lsh import band_keys
from .minhash import signatures, text_signatures
from .shingles import jaccard, shingle_hashes

STAGE = "dedup"


class BandKeysFn(beam.DoFn):
    """A batch of (id, text) -> (band key, id) for every band of every text's MinHash signature."""

    def __init__(self, config: DedupConfig, bands: int, rows: int, progress_dir: str | None = None):
        self.config, self.bands, self.rows, self.progress_dir = config, bands, rows, progress_dir

    def setup(self):
        self.progress = ProgressCounter(self.progress_dir)

    def finish_bundle(self):
        self.progress.flush()

    def process(self, batch):
        c = self.config
        self.progress.add(len(batch))
        ids = [i for i, _ in batch]
        texts = [t for _, t in batch]
        if c.shingle == "char":
            sigs = text_signatures(texts, c.ngram, c.num_perm, c.seed)
        else:
            sigs = signatures([shingle_hashes(t, c.ngram, "word") for t in texts], c.num_perm, c.seed)
        for pair_id, sig in zip(ids, sigs, strict=True):
            for key in band_keys(sig, self.bands, self.rows):
                yield key, pair_id


def bucket_edges(element, all_pairs_up_to: int):
    """Candidate edges (a < b) of one LSH bucket: all pairs of a small bucket; a star from the smallest id
    plus a chain through the sorted ids for a big one (connectivity without quadratic blow-up)."""
    _key, ids = element
    ids = sorted(set(ids))
    if len(ids) < 2:
        return
    if len(ids) <= all_pairs_up_to:
        yield from itertools.combinations(ids, 2)
        return
    yield from ((ids[0], other) for other in ids[1:])
    yield from ((ids[i], ids[i + 1]) for i in range(1, len(ids) - 1))


class AttachFirstTextFn(beam.DoFn):
    """(a, {edges: [b...], text: [t_a]}) -> (b, (a, t_a))."""

    def process(self, element):
        a, grouped = element
        texts = list(grouped["text"])
        for b in grouped["edges"]:
            yield b, (a, texts[0])


class VerifyEdgesFn(beam.DoFn):
    """(b, {edges: [(a, t_a)...], text: [t_b]}) -> (a, b) when exact Jaccard >= threshold, else ``rejected``."""

    def __init__(self, config: DedupConfig):
        self.config = config

    def process(self, element):
        b, grouped = element
        texts = list(grouped["text"])
        if not texts:
            return
        c = self.config
        hashes_b = shingle_hashes(texts[0], c.ngram, c.shingle)
        for a, text_a in grouped["edges"]:
            if jaccard(shingle_hashes(text_a, c.ngram, c.shingle), hashes_b) >= c.threshold:
                yield a, b
            else:
                yield beam.pvalue.TaggedOutput("rejected", (a, b))


def _rank(pair: dict, policy: str):
    if policy == "longest":
        return -len(pair["passage"]), pair["pair_id"]
    return (pair["pair_id"],)


@beam.typehints.with_output_types(tuple[str, dict])
class LabelPairFn(beam.DoFn):
    """(id, {pair: [row], label: [component min]}) -> (label, row); rows without a label are singletons and
    go out at once on ``singleton`` with cluster_id = their own id and cluster_size = 1."""

    def process(self, element):
        pair_id, grouped = element
        rows, labels = list(grouped["pair"]), list(grouped["label"])
        if not rows:
            return
        if not labels:
            yield beam.pvalue.TaggedOutput("singleton", {**rows[0], "cluster_id": pair_id, "cluster_size": 1})
            return
        yield labels[0], rows[0]


class KeepRepresentativeFn(beam.DoFn):
    """(cluster label, rows) -> the representative (with cluster_id/size) and ``dead`` near duplicates."""

    def __init__(self, policy: str):
        self.policy = policy

    def process(self, element):
        label, rows = element
        rows = sorted(rows, key=lambda r: _rank(r, self.policy))
        keep, size = rows[0], len(rows)
        yield {**keep, "cluster_id": label, "cluster_size": size}
        for row in rows[1:]:
            yield beam.pvalue.TaggedOutput(DEAD, pair_dead_letter(
                STAGE, "near_duplicate", row, f"cluster {label} of {size}, kept {keep['pair_id']}",
                {"cluster_id": label, "kept_id": keep["pair_id"], "cluster_size": size}))


def size_bucket(size: int) -> str:
    """Cluster sizes for the manifest: exact up to 10, then powers of ten."""
    if size <= 10:
        return str(size)
    low = 10 ** int(np.floor(np.log10(size)))
    return f"{low + 1}-{low * 10}" if size > low else f"{low // 10 + 1}-{low}"
