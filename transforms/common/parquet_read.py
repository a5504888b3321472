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


def row_groups(files: list[str]) -> list[tuple[str, int]]:
    out = []
    for path in files:
        with FileSystems.open(path) as fh:
            out += [(path, g) for g in range(pq.ParquetFile(fh).metadata.num_row_groups)]
    return out


def _read_row_group(unit: tuple[str, int]):
    path, group = unit
    with FileSystems.open(path) as fh:
        yield from pq.ParquetFile(fh).read_row_group(group).to_pylist()


class ReadParquetRowGroups(beam.PTransform):
    def __init__(self, files: list[str]):
        super().__init__()
        self.units = row_groups(files)

    def expand(self, pbegin):
        return (pbegin
                | "RowGroups" >> beam.Create(self.units, reshuffle=False)
                | "ReadRowGroup" >> beam.FlatMap(_read_row_group))
