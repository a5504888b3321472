"""``ConnectedComponents``: connected components of a graph given as an edge PCollection, inside Beam.

Alternating large-star and small-star operations (Kiveris et al., "Connected Components in MapReduce and
Beyond", SoCC 2014): every round is a GroupByKey, no worker ever holds more than one node's neighbourhood,
and the edge set shrinks to stars ``(node, component minimum)``. A fixed number of rounds is unrolled in
the pipeline (a graph never needs more rounds than its diameter, and far fewer in practice);
``violations`` counts nodes that are not yet in that final form (0 = converged); when it is not 0 the driver
(``pipelines/dedup.py``) runs the whole, deterministic pipeline again with twice the rounds.
"""

from __future__ import annotations

import apache_beam as beam


def _large_star(element):
    node, neighbours = element
    neighbours = set(neighbours)
    smallest = min(neighbours | {node})
    for other in neighbours:
        if other > node:
            yield other, smallest


def _small_star(element):
    node, smaller = element
    smaller = set(smaller)
    smallest = min(smaller)
    for other in smaller | {node}:
        if other != smallest:
            yield other, smallest


def _violations(element):
    _node, roles = element
    parents = set(roles["parent_of_me"])
    yield int(len(parents) > 1 or (len(parents) > 0 and len(roles["child_of_me"]) > 0))


class ConnectedComponents(beam.PTransform):
    """edges ``(u, v)`` (comparable node ids, u != v) -> (labels ``(node, component min)`` for every node
    of the graph, the minimum itself included, violation count)."""

    def __init__(self, rounds: int = 8):
        super().__init__()
        self.rounds = rounds

    def expand(self, edges):
        for i in range(self.rounds):
            edges = (
                edges
                | f"LargeStar{i}/Both" >> beam.FlatMap(lambda e: [(e[0], e[1]), (e[1], e[0])])
                | f"LargeStar{i}/Group" >> beam.GroupByKey()
                | f"LargeStar{i}/Link" >> beam.FlatMap(_large_star)
                | f"SmallStar{i}/Orient" >> beam.Map(lambda e: (max(e), min(e)))
                | f"SmallStar{i}/Group" >> beam.GroupByKey()
                | f"SmallStar{i}/Link" >> beam.FlatMap(_small_star)
            )
        edges = edges | "Distinct" >> beam.Distinct()
        violations = (
            {
                "parent_of_me": edges | "AsChild" >> beam.Map(lambda e: (e[0], e[1])),
                "child_of_me": edges | "AsParent" >> beam.Map(lambda e: (e[1], e[0])),
            }
            | "Roles" >> beam.CoGroupByKey()
            | "Check" >> beam.FlatMap(_violations)
            | "Sum" >> beam.CombineGlobally(sum)
        )
        roots = edges | "Roots" >> beam.Map(lambda e: (e[1], e[1])) | "DistinctRoots" >> beam.Distinct()
        return (edges, roots) | "Labels" >> beam.Flatten(), violations
