"""The dedup stage's steps. Rows are named by their place in the input (a unit's offset + the row), and every step
reads and writes scratch files, so the shuffles carry partition numbers and paths, never text:

- :class:`SignFn` (a row group): MinHash signatures -> band hashes with the rows' numbers, split by partition of the
  hash; the compared texts kept in a per-unit text file for the exact check;
- :class:`BucketEdgesFn` (a partition of band hashes): rows that share a band hash -> candidate edges;
- :class:`VerifyFn` (a partition of candidate edges): texts read back by row number, exact Jaccard -> the
  verified edges, routed for the connected components, and each node's rank (passage length, id);
- :class:`JoinNodesFn`, :class:`DecideFn`: component labels joined with the ranks, grouped by component -> one
  representative per component, and a decision for every member, routed to its row group;
- :class:`FinalizeFn` (a row group with its decisions): the rows read once more -> kept rows with their cluster,
  near duplicates as dead letters.
"""

from __future__ import annotations

import itertools
import posixpath

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cmtp.schemas import DEAD_LETTER, PAIR
from cmtp.schemas.validate import rows_to_table
from cmtp.transforms.common import scratch
from cmtp.transforms.common.dead_letters import DEAD, pair_dead_letter
from cmtp.transforms.common.ids import partitions_of
from cmtp.transforms.common.outcomes import DROPPED, IN, OUT, counts, fact
from cmtp.transforms.common.parquet_read import Unit, read_unit, split_nulls
from cmtp.transforms.common.parquet_shards import spill
from cmtp.transforms.common.progress import ProgressCounter

from .components import both_ways, unique_edges, write_routed
from .config import DedupConfig
from .lsh import band_hashes
from .minhash import signatures, text_signatures
from .shingles import jaccard, shingle_hashes

STAGE = "dedup"
COUNTS, NODES = "counts", "nodes"
VERIFY_CHUNK = 4096  # candidate edges checked at a time: their nodes' shingle sets are what the check holds


def compared_texts(table: pa.Table, field: str) -> pa.ChunkedArray:
    """The text dedup compares (``DedupConfig.field``) of every row."""
    if field == "title_passage":
        return pc.binary_join_element_wise(table.column("title"), table.column("passage"), "\n")
    return table.column(field)


def text_path(folder: str, unit_index: int) -> str:
    return posixpath.join(folder, "text", f"u{unit_index:07d}.arrow")


class SignFn(beam.DoFn):
    """A row group -> ``(partition, path)`` files of band hashes and row numbers (``key``, ``node``); the rows'
    compared texts, passage lengths and ids into the unit's text file. Rows with a null field are left to
    :class:`FinalizeFn` (a dead letter each)."""

    def __init__(self, config: DedupConfig, bands: int, rows: int, parts: int, folder: str,
                 progress_dir: str | None = None):
        self.config, self.bands, self.rows, self.parts, self.folder = config, bands, rows, parts, folder
        self.progress_dir = progress_dir

    def setup(self):
        self.progress = ProgressCounter(self.progress_dir, "sign")

    def finish_bundle(self):
        self.progress.flush()

    def process(self, unit: Unit):
        c = self.config
        table = read_unit(unit, PAIR)
        valid = np.ones(unit.rows, dtype=bool)
        for field in PAIR:
            if not field.nullable:
                valid &= ~table.column(field.name).is_null().to_numpy(zero_copy_only=False)
        table, rows = table.filter(pa.array(valid)), np.flatnonzero(valid)
        texts = compared_texts(table, c.field)
        scratch.write_table(text_path(self.folder, unit.index), pa.table({
            "node": pa.array(unit.offset + rows, pa.int64()), "text": texts,
            "passage_len": pc.utf8_length(table.column("passage")).cast(pa.int32()),
            "pair_id": table.column("pair_id")}), batch_rows=max(1, table.num_rows))
        text_list = texts.to_pylist()
        if c.shingle == "char":
            sigs = text_signatures(text_list, c.ngram, c.num_perm, c.seed)
        else:
            sigs = signatures([shingle_hashes(t, c.ngram, "word") for t in text_list], c.num_perm, c.seed)
        keys = band_hashes(sigs, self.bands, self.rows).ravel()
        nodes = np.repeat(unit.offset + rows, self.bands)
        part = (keys % np.uint64(self.parts)).astype(np.int64)
        for p in np.unique(part):
            mask = part == p
            path = posixpath.join(self.folder, "bands", f"p{int(p):05d}", f"{unit.name}.npz")
            yield int(p), scratch.write_arrays(path, key=keys[mask], node=nodes[mask])
        self.progress.add(unit.rows)


def bucket_edges(keys: np.ndarray, nodes: np.ndarray, all_pairs_up_to: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate edges (a < b) of the LSH buckets (rows that share a band hash): all pairs of a small bucket; a
    star from the smallest node plus a chain through the sorted nodes for a big one (connectivity without
    quadratic blow-up). Distinct, sorted."""
    order = np.lexsort((nodes, keys))
    keys, nodes = keys[order], nodes[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, len(keys)])
    pairs = starts[sizes == 2]
    a, b = [nodes[pairs]], [nodes[pairs + 1]]
    for start, size in zip(starts[sizes > 2], sizes[sizes > 2], strict=True):
        members = nodes[start:start + size]
        if size <= all_pairs_up_to:
            i, j = np.triu_indices(size, 1)
            a.append(members[i])
            b.append(members[j])
        else:
            a += [np.full(size - 1, members[0]), members[1:-1]]
            b += [members[1:], members[2:]]
    return unique_edges(np.concatenate(a).astype(np.int64), np.concatenate(b).astype(np.int64))


class CountedStep(beam.DoFn):
    """A step that counts its elements for the driver's bar of ``phase`` (the group, components, decide phases count
    partitions done)."""

    phase = ""

    def __init__(self, progress_dir: str | None = None):
        self.progress_dir = progress_dir

    def setup(self):
        self.progress = ProgressCounter(self.progress_dir, self.phase)

    def finish_bundle(self):
        self.progress.flush()


class BucketEdgesFn(CountedStep):
    """``(partition, band files)`` -> candidate edges routed by the partition of their first node."""

    phase = "group"

    def __init__(self, all_pairs_up_to: int, parts: int, folder: str, progress_dir: str | None = None):
        super().__init__(progress_dir)
        self.all_pairs_up_to, self.parts, self.folder = all_pairs_up_to, parts, folder

    def process(self, element):
        self.progress.add()
        p, paths = element
        bands = scratch.concat_arrays(list(paths), ("key", "node"))
        a, b = bucket_edges(bands["key"].astype(np.uint64), bands["node"].astype(np.int64), self.all_pairs_up_to)
        yield from write_routed(a, b, self.parts, posixpath.join(self.folder, "candidates"), f"from{p:05d}")


class _TextReader:
    """Rows of the per-unit text files by node number; a file is mapped once per chunk and only the rows taken are
    copied (a local file is memory-mapped: its untouched pages are never read)."""

    def __init__(self, folder: str, offsets: np.ndarray):
        self.folder, self.offsets = folder, offsets

    def rows(self, nodes: np.ndarray) -> dict[int, tuple[str, int, str]]:
        """node -> (compared text, passage length, pair id)."""
        units = np.searchsorted(self.offsets, nodes, side="right") - 1
        found = {}
        for unit in np.unique(units):
            table = scratch.read_table(text_path(self.folder, int(unit)))
            wanted = nodes[units == unit]
            where = np.searchsorted(table.column("node").to_numpy(), wanted)
            taken = table.take(pa.array(where)).to_pydict()
            for node, text, length, pair_id in zip(wanted, taken["text"], taken["passage_len"], taken["pair_id"],
                                                   strict=True):
                found[int(node)] = (text, length, pair_id)
        return found


class VerifyFn(CountedStep):
    """``(partition, candidate edge files)`` -> verified edges (both ways, routed by node partition, for the
    components), each verified node's rank ``(node, passage_len, pair_id)`` on ``nodes``, counts on ``counts``."""

    phase = "group"

    def __init__(self, config: DedupConfig, offsets: list[int], parts: int, folder: str,
                 progress_dir: str | None = None):
        super().__init__(progress_dir)
        self.config, self.offsets, self.parts, self.folder = config, np.asarray(offsets, np.int64), parts, folder

    def process(self, element):
        self.progress.add()
        p, paths = element
        edges = scratch.concat_arrays(list(paths), ("u", "v"))
        a, b = unique_edges(edges["u"].astype(np.int64), edges["v"].astype(np.int64))
        yield beam.pvalue.TaggedOutput(COUNTS, fact("edges", "candidate", len(a)))
        reader, c = _TextReader(self.folder, self.offsets), self.config
        kept_a, kept_b, ranks = [], [], {}
        for start in range(0, len(a), VERIFY_CHUNK):
            ca, cb = a[start:start + VERIFY_CHUNK], b[start:start + VERIFY_CHUNK]
            rows = reader.rows(np.unique(np.r_[ca, cb]))
            if c.verify:
                hashes = {node: shingle_hashes(text, c.ngram, c.shingle) for node, (text, _, _) in rows.items()}
                ok = np.array([jaccard(hashes[x], hashes[y]) >= c.threshold for x, y in zip(ca, cb, strict=True)],
                              dtype=bool)
            else:
                ok = np.ones(len(ca), dtype=bool)
            kept_a.append(ca[ok])
            kept_b.append(cb[ok])
            for node in itertools.chain(ca[ok], cb[ok]):
                ranks[int(node)] = rows[int(node)][1:]
            yield beam.pvalue.TaggedOutput(COUNTS, fact("edges", "rejected_by_jaccard", int((~ok).sum())))
        va, vb = np.concatenate(kept_a or [np.zeros(0, np.int64)]), np.concatenate(kept_b or [np.zeros(0, np.int64)])
        yield from write_routed(*both_ways(va, vb), self.parts, posixpath.join(self.folder, "verified"),
                                f"from{p:05d}")
        nodes = np.array(sorted(ranks), dtype=np.int64)
        table = pa.table({"node": nodes, "passage_len": pa.array([ranks[n][0] for n in nodes], pa.int32()),
                          "pair_id": pa.array([ranks[n][1] for n in nodes], pa.string())})
        part = partitions_of(nodes, self.parts)
        for q in np.unique(part):
            path = posixpath.join(self.folder, "ranks", f"p{int(q):05d}", f"from{p:05d}.arrow")
            yield beam.pvalue.TaggedOutput(NODES, (int(q), scratch.write_table(
                path, table.filter(pa.array(part == q)))))


class JoinNodesFn(CountedStep):
    """``(partition, {labels, nodes})`` -> every labelled node with its rank, routed by its component's partition."""

    phase = "decide"

    def __init__(self, parts: int, folder: str, progress_dir: str | None = None):
        super().__init__(progress_dir)
        self.parts, self.folder = parts, folder

    def process(self, element):
        self.progress.add()
        p, joined = element
        labels = scratch.concat_arrays(list(joined["labels"]), ("node", "label"))
        if not len(labels["node"]):
            return
        ranks = pa.concat_tables([scratch.read_table(path) for path in sorted(joined["nodes"])])
        node_of_rank = ranks.column("node").to_numpy()
        order = np.argsort(node_of_rank, kind="stable")
        where = order[np.searchsorted(node_of_rank, labels["node"], sorter=order)]
        table = ranks.take(pa.array(where)).append_column("label", pa.array(labels["label"].astype(np.int64)))
        part = partitions_of(labels["label"], self.parts)
        for q in np.unique(part):
            path = posixpath.join(self.folder, "members", f"p{int(q):05d}", f"from{p:05d}.arrow")
            yield int(q), scratch.write_table(path, table.filter(pa.array(part == q)))


def _rank_order(table: pa.Table, policy: str) -> pa.Array:
    """Members sorted by component, the representative first: longest passage (lowest id on ties) or lowest id."""
    keys = [("label", "ascending")] + ([("passage_len", "descending")] if policy == "longest" else [])
    return pc.sort_indices(table, keys + [("pair_id", "ascending"), ("node", "ascending")])


class DecideFn(CountedStep):
    """``(partition, member files)`` -> per component: the representative, the cluster id (its members' lowest
    pair id) and size; a decision for every member ``(node, cluster_id, cluster_size, kept_id)`` routed to the
    row group holding it as ``(unit index, path)``."""

    phase = "decide"

    def __init__(self, policy: str, offsets: list[int], folder: str, progress_dir: str | None = None):
        super().__init__(progress_dir)
        self.policy, self.offsets, self.folder = policy, np.asarray(offsets, np.int64), folder

    def process(self, element):
        self.progress.add()
        q, paths = element
        members = pa.concat_tables([scratch.read_table(path) for path in sorted(paths)])
        members = members.take(_rank_order(members, self.policy))
        label = members.column("label").to_numpy()
        starts = np.flatnonzero(np.r_[True, label[1:] != label[:-1]])
        sizes = np.diff(np.r_[starts, len(label)])
        ids = members.column("pair_id").to_numpy(zero_copy_only=False)
        lowest = [min(ids[s:s + n]) for s, n in zip(starts, sizes, strict=True)]
        decisions = pa.table({
            "node": members.column("node"),
            "cluster_id": pa.array(np.repeat(np.array(lowest, dtype=object), sizes), pa.string()),
            "cluster_size": pa.array(np.repeat(sizes, sizes), pa.int32()),
            "kept_id": pa.array(np.repeat(ids[starts], sizes), pa.string()),
        })
        units = np.searchsorted(self.offsets, members.column("node").to_numpy(), side="right") - 1
        for unit in np.unique(units):
            path = posixpath.join(self.folder, "decisions", f"u{int(unit):07d}", f"from{q:05d}.arrow")
            yield int(unit), scratch.write_table(path, decisions.filter(pa.array(units == unit)))


class FinalizeFn(CountedStep):
    """``(unit index, {unit, decisions})`` -> the unit's kept rows (with cluster id and size) spilled for the pairs
    writer, its near duplicates and rows with a null field as dead letters; counts of all of them."""

    phase = "finalize"

    def __init__(self, folder: str, progress_dir: str | None = None):
        super().__init__(progress_dir)
        self.folder = folder

    def process(self, element):
        _index, joined = element
        (unit,) = joined["unit"]
        self.progress.add(unit.rows)
        table = read_unit(unit, PAIR)
        yield beam.pvalue.TaggedOutput(COUNTS, counts(table, IN))
        node = np.arange(unit.offset, unit.offset + unit.rows, dtype=np.int64)
        table = table.append_column("_node", pa.array(node))
        table, dead = split_nulls(table, PAIR, STAGE)
        decided = pa.concat_tables([scratch.read_table(p) for p in sorted(joined["decisions"])]) \
            if joined["decisions"] else None
        cluster_id, cluster_size = table.column("pair_id"), pa.array(np.ones(table.num_rows, np.int32))
        dropped = np.zeros(table.num_rows, dtype=bool)
        if decided is not None and decided.num_rows:
            rows = np.searchsorted(table.column("_node").to_numpy(), decided.column("node").to_numpy())
            ids = np.array(cluster_id.to_pylist(), dtype=object)
            sizes = np.ones(table.num_rows, np.int32)
            ids[rows] = decided.column("cluster_id").to_numpy(zero_copy_only=False)
            sizes[rows] = decided.column("cluster_size").to_numpy()
            kept_id = decided.column("kept_id").to_numpy(zero_copy_only=False)
            own_id = np.array(table.column("pair_id").to_pylist(), dtype=object)[rows]
            dropped[rows] = kept_id != own_id
            for row, cluster, size, keep in zip(rows[kept_id != own_id], ids[rows][kept_id != own_id],
                                                sizes[rows][kept_id != own_id], kept_id[kept_id != own_id],
                                                strict=True):
                pair = table.slice(int(row), 1).to_pylist()[0]
                dead.append(pair_dead_letter(STAGE, "near_duplicate", pair, f"cluster {cluster} of {size}, kept {keep}",
                                             {"cluster_id": cluster, "kept_id": keep, "cluster_size": int(size)}))
            cluster_id, cluster_size = pa.array(ids, pa.string()), pa.array(sizes)
        kept = (table.drop_columns(["cluster_id", "cluster_size", "_node"])
                .append_column("cluster_id", cluster_id).append_column("cluster_size", cluster_size)
                .filter(pa.array(~dropped)))
        if kept.num_rows:
            yield spill(kept, PAIR, posixpath.join(self.folder, "out", "pairs", f"{unit.name}.arrow"))
        dead_table = rows_to_table(dead, DEAD_LETTER, validate=False)  # spill() validates
        if dead:
            yield beam.pvalue.TaggedOutput(DEAD, spill(dead_table, DEAD_LETTER, posixpath.join(
                self.folder, "out", "dead_letters", f"{unit.name}.arrow")))
        sizes = kept.column("cluster_size").to_numpy()
        tally = counts(kept, OUT) + counts(dead_table, DROPPED)
        for size, n in zip(*np.unique(sizes, return_counts=True), strict=True):
            tally += fact("cluster_sizes", size_bucket(int(size)), int(n))
        yield beam.pvalue.TaggedOutput(COUNTS, tally)


def size_bucket(size: int) -> str:
    """Cluster sizes for the manifest: exact up to 10, then powers of ten."""
    if size <= 10:
        return str(size)
    low = 10 ** int(np.floor(np.log10(size)))
    return f"{low + 1}-{low * 10}" if size > low else f"{low // 10 + 1}-{low}"
