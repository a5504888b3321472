"""``ConnectedComponents``: connected components of a graph whose edges wait in scratch files, inside Beam.

Nodes are integers (the rows' places in the input) split into partitions by a hash; an element is
``(partition, path)``: a file of directed edges ``(u, v)`` whose ``u`` falls in that partition (every edge is there
in both orientations), so the shuffles carry paths and each step works on arrays. Each round contracts every
partition locally, in the spirit of the star contractions of Kiveris et al. ("Connected Components in MapReduce and
Beyond", SoCC 2014): the components of the partition's edges (all edges that touch its nodes; SciPy's
``connected_components``) are real components' parts, so each becomes a star on its smallest node. No worker ever
holds more than one partition's edges, the edge set shrinks to stars ``(node, component minimum)``, and a path's
length at least halves per round (a node's neighbourhood is contracted in its partition, so where the stars of two
partitions overlap they merge in the next round).

A fixed number of rounds is unrolled in the pipeline (a graph never needs more rounds than its diameter, and far
fewer in practice); ``violations`` counts nodes that are not yet in that final form (0 = converged); when it is not
0 the driver (``pipelines/dedup.py``) runs the whole, deterministic pipeline again with twice the rounds.
"""

from __future__ import annotations

import posixpath

import apache_beam as beam
import numpy as np

from cmtp.transforms.common import scratch
from cmtp.transforms.common.ids import partitions_of
from cmtp.transforms.common.multi_output import MultiOutput
from cmtp.transforms.common.progress import ProgressCounter

EDGE_NAMES = ("u", "v")


def unique_edges(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``(u, v)`` pairs, sorted by u then v."""
    if not len(u):
        return u.astype(np.int64), v.astype(np.int64)
    order = np.lexsort((v, u))
    u, v = u[order], v[order]
    first = np.r_[True, (u[1:] != u[:-1]) | (v[1:] != v[:-1])]
    return u[first], v[first]


def contract(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges -> one star per component of the graph they make: ``(x, m)`` for every node x of a component but its
    smallest node m. Written on SciPy's sparse-graph components (the nodes renumbered densely first)."""
    if not len(u):
        return u, v
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes, dense = np.unique(np.r_[u, v], return_inverse=True)
    n = len(nodes)
    graph = coo_matrix((np.ones(len(u), np.int8), (dense[: len(u)], dense[len(u):])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    smallest = np.full(component.max() + 1, np.iinfo(np.int64).max)
    np.minimum.at(smallest, component, nodes)  # nodes are sorted: the first node met is the smallest
    m = smallest[component]
    other = nodes != m
    return nodes[other], m[other]


def labels(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Star edges in both orientations (``(x, m)`` and ``(m, x)``, grouped by their first node) -> (nodes, their
    component label, violations): a node's label is its parent (the smaller end of its edge) or, for a root, itself;
    a violation is a node with two parents, or with a parent and a child (not yet a star)."""
    if not len(u):
        return u, v, 0
    u, v = unique_edges(u, v)
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    nodes = u[starts]
    is_parent_edge = v < u
    parents = np.add.reduceat(is_parent_edge.astype(np.int64), starts)
    children = np.add.reduceat((~is_parent_edge).astype(np.int64), starts)
    parent = np.minimum.reduceat(np.where(is_parent_edge, v, np.iinfo(np.int64).max), starts)
    label = np.where(parents > 0, parent, nodes)
    violations = int(np.count_nonzero((parents > 1) | ((parents > 0) & (children > 0))))
    return nodes, label, violations


def write_routed(u: np.ndarray, v: np.ndarray, parts: int, folder: str, name: str):
    """Edges (u, v) split by the partition of u, one file per partition -> ``(partition, path)``."""
    part = partitions_of(u, parts)
    for p in np.unique(part):
        mask = part == p
        path = posixpath.join(folder, f"p{int(p):05d}", f"{name}.npz")
        yield int(p), scratch.write_arrays(path, u=u[mask], v=v[mask])


def both_ways(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.r_[u, v], np.r_[v, u]


def _load(paths) -> tuple[np.ndarray, np.ndarray]:
    edges = scratch.concat_arrays(list(paths), EDGE_NAMES)
    return edges["u"].astype(np.int64), edges["v"].astype(np.int64)


class _Counted(beam.DoFn):
    """Counts the partitions it has done for the driver's "components" bar."""

    def __init__(self, progress_dir: str | None):
        self.progress_dir = progress_dir

    def setup(self):
        self.progress = ProgressCounter(self.progress_dir, "components")

    def finish_bundle(self):
        self.progress.flush()


class _ContractFn(_Counted):
    """One round on one partition's edges: its stars, both ways, routed by partition for the next round."""

    def __init__(self, parts: int, folder: str, progress_dir: str | None = None):
        super().__init__(progress_dir)
        self.parts, self.folder = parts, folder

    def process(self, element):
        self.progress.add()
        p, paths = element
        yield from write_routed(*both_ways(*contract(*_load(paths))), self.parts, self.folder, f"from{p:05d}")


class _LabelsFn(_Counted):
    def __init__(self, folder: str, progress_dir: str | None = None):
        super().__init__(progress_dir)
        self.folder = folder

    def process(self, element):
        self.progress.add()
        p, paths = element
        nodes, label, violations = labels(*_load(paths))
        yield beam.pvalue.TaggedOutput("violations", violations)
        yield p, scratch.write_arrays(posixpath.join(self.folder, f"p{p:05d}.npz"), node=nodes, label=label)


class ConnectedComponents(beam.PTransform):
    """``(partition, path)`` of directed edges (both orientations, grouped by their first node's partition) ->
    (labels: ``(partition, path)`` of ``node``/``label`` arrays for every node of the graph, its component's
    minimum node as label; violations: one count per partition, 0 when converged)."""

    def __init__(self, rounds: int, parts: int, folder: str, progress_dir: str | None = None):
        super().__init__()
        self.rounds, self.parts, self.folder, self.progress_dir = rounds, parts, folder, progress_dir

    def expand(self, edges):
        for i in range(self.rounds):
            edges = (edges
                     | f"Round{i}/Group" >> beam.GroupByKey()
                     | f"Round{i}/Contract" >> beam.ParDo(
                         _ContractFn(self.parts, posixpath.join(self.folder, f"r{i:03d}"), self.progress_dir)))
        result = (edges
                  | "Final/Group" >> beam.GroupByKey()
                  | "Labels" >> MultiOutput(_LabelsFn(posixpath.join(self.folder, "labels"), self.progress_dir),
                                            "violations",
                                            main="labels"))
        return result.labels, result["violations"]
