"""``ConnectedComponents``: connected components of a graph whose edges wait in scratch files, inside Beam.

Alternating large-star and small-star operations (Kiveris et al., "Connected Components in MapReduce and Beyond",
SoCC 2014): every step groups the edges by node, no worker ever holds more than one partition of the nodes'
neighbourhoods, and the edge set shrinks to stars ``(node, component minimum)``. Nodes are integers (the rows'
places in the input) split into partitions by a hash; an element is ``(partition, path)``: a file of directed
edges ``(u, v)`` whose ``u`` falls in that partition, so the shuffles carry paths and each step works on arrays
(one NumPy pass per partition instead of one Beam element per edge).

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

EDGE_NAMES = ("u", "v")


def unique_edges(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``(u, v)`` pairs, sorted by u then v."""
    if not len(u):
        return u.astype(np.int64), v.astype(np.int64)
    order = np.lexsort((v, u))
    u, v = u[order], v[order]
    first = np.r_[True, (u[1:] != u[:-1]) | (v[1:] != v[:-1])]
    return u[first], v[first]


def _groups(u: np.ndarray, v: np.ndarray):
    """Edges sorted by u, the start of each u's run, and its u."""
    order = np.argsort(u, kind="stable")
    u, v = u[order], v[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    return u, v, starts, u[starts]


def large_star(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Directed edges (both orientations of every edge) -> for each node u, its larger neighbours linked to the
    smallest of u and its neighbours: ``(v, m(u))`` for v > u."""
    if not len(u):
        return u, v
    u, v, starts, nodes = _groups(u, v)
    smallest = np.minimum(np.minimum.reduceat(v, starts), nodes)
    m = np.repeat(smallest, np.diff(np.r_[starts, len(u)]))
    larger = v > u
    return unique_edges(v[larger], m[larger])


def small_star(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges (u, v) with u > v -> for each u, u and its smaller neighbours linked to the smallest of those:
    ``(x, m(u))`` for x in N(u) + {u}, x != m(u)."""
    if not len(u):
        return u, v
    u, v, starts, nodes = _groups(u, v)
    smallest = np.minimum.reduceat(v, starts)
    m = np.repeat(smallest, np.diff(np.r_[starts, len(u)]))
    other = v != m
    return unique_edges(np.r_[nodes, v[other]], np.r_[smallest, m[other]])


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


class _StarFn(beam.DoFn):
    """One star step on one partition's edges; the result routed by partition for the next step."""

    def __init__(self, step: str, parts: int, folder: str):
        self.step, self.parts, self.folder = step, parts, folder

    def process(self, element):
        p, paths = element
        u, v = _load(paths)
        if self.step == "large":  # -> (v, m) with v > m, grouped by v for the small star
            x, m = large_star(u, v)
        else:  # -> (x, m) with x > m, both ways for the next large star
            x, m = both_ways(*small_star(u, v))
        yield from write_routed(x, m, self.parts, self.folder, f"from{p:05d}")


class _LabelsFn(beam.DoFn):
    def __init__(self, folder: str):
        self.folder = folder

    def process(self, element):
        p, paths = element
        nodes, label, violations = labels(*_load(paths))
        yield beam.pvalue.TaggedOutput("violations", violations)
        yield p, scratch.write_arrays(posixpath.join(self.folder, f"p{p:05d}.npz"), node=nodes, label=label)


class ConnectedComponents(beam.PTransform):
    """``(partition, path)`` of directed edges (both orientations, grouped by their first node's partition) ->
    (labels: ``(partition, path)`` of ``node``/``label`` arrays for every node of the graph, its component's
    minimum node as label; violations: one count per partition, 0 when converged)."""

    def __init__(self, rounds: int, parts: int, folder: str):
        super().__init__()
        self.rounds, self.parts, self.folder = rounds, parts, folder

    def expand(self, edges):
        for i in range(self.rounds):
            for step in ("large", "small"):
                edges = (edges
                         | f"Round{i}/{step}/Group" >> beam.GroupByKey()
                         | f"Round{i}/{step}/Star" >> beam.ParDo(
                             _StarFn(step, self.parts, posixpath.join(self.folder, f"r{i:03d}-{step}"))))
        result = (edges
                  | "Final/Group" >> beam.GroupByKey()
                  | "Labels" >> MultiOutput(_LabelsFn(posixpath.join(self.folder, "labels")), "violations",
                                            main="labels"))
        return result.labels, result["violations"]
