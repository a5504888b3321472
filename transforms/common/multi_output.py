"""``MultiOutput``: a multi-output ParDo that runs on every Beam runner.

``beam.ParDo(fn).with_outputs(...)`` is the idiomatic form, but Beam's DaskRunner (2.77) ignores the output tags:
every element, main and tagged, reaches every consumer (reproduced in ``tests/test_dask_runner.py``; on the
shared sample a pair reached the dead-letter counter and failed with ``KeyError('reason')``). Here the DoFn runs
unchanged inside a single-output ParDo that turns each ``TaggedOutput`` into a ``(tag, value)`` pair, and one
filter per output selects its pairs. On the FnApiRunner and Dataflow the filters fuse with the ParDo, so the cost
is one tuple per element.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

MAIN = None  # the tag of the main output


class _AsTaggedPairs(beam.DoFn):
    """Runs ``fn`` and emits ``(tag, value)``; the main output gets tag ``MAIN``."""

    def __init__(self, fn: beam.DoFn):
        self.fn = fn

    def setup(self):
        self.fn.setup()

    def start_bundle(self):
        self.fn.start_bundle()

    def process(self, element):
        for out in self.fn.process(element) or ():
            yield (out.tag, out.value) if isinstance(out, TaggedOutput) else (MAIN, out)

    def finish_bundle(self):
        return self.fn.finish_bundle()

    def teardown(self):
        self.fn.teardown()


def _values_of(pair, tag):
    if pair[0] == tag:
        yield pair[1]


class Outputs(dict):
    """The outputs by tag, also as attributes (like Beam's ``DoOutputsTuple``)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc


class MultiOutput(beam.PTransform):
    """``pcoll | MultiOutput(fn, "dead", "other", main="ok")`` -> outputs ``.ok``, ``["dead"]``, ``["other"]``."""

    def __init__(self, fn: beam.DoFn, *tags: str, main: str = "main"):
        super().__init__()
        self.fn, self.tags, self.main = fn, tags, main

    def expand(self, pcoll):
        pairs = pcoll | "Run" >> beam.ParDo(_AsTaggedPairs(self.fn))
        outputs = Outputs({self.main: pairs | f"Only[{self.main}]" >> beam.FlatMap(_values_of, MAIN)})
        for tag in self.tags:
            outputs[tag] = pairs | f"Only[{tag}]" >> beam.FlatMap(_values_of, tag)
        return outputs
