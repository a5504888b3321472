"""``ReadParquetRowGroups``: the rows of Parquet files, one row group per element of work.

Beam's ``ReadFromParquet`` is a source (``Read`` / splittable DoFn) that some runners do not translate: the
DaskRunner supports only Create, ParDo, GroupByKey and Flatten, and skips the rest silently (dedup failed with
``'NoneType' object has no attribute 'map'``). Listing the row groups on the driver and reading each in a ParDo
runs on every runner and still spreads the reading over the workers (a row group is the unit of parallelism
Parquet offers anyway).
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from .paths import RowGroup, row_groups

PAIR_COLUMNS = ("pair_id", "title", "passage")  # what dedup and score read of a ``pair`` file


def _read_row_group(unit: RowGroup):
    with FileSystems.open(unit.path) as fh:
        yield from pq.ParquetFile(fh).read_row_group(unit.row_group).to_pylist()


class ReadParquetRowGroups(beam.PTransform):
    """``rows``: how many rows the files hold, known from their footers before the pipeline runs."""

    def __init__(self, files: list[str], columns: tuple[str, ...] = (), schema: str = ""):
        super().__init__()
        self.units = row_groups(files, columns, schema)
        self.rows = sum(u.rows for u in self.units)

    def expand(self, pbegin):
        return (pbegin
                | "RowGroups" >> beam.Create(self.units, reshuffle=False)
                | "ReadRowGroup" >> beam.FlatMap(_read_row_group))
