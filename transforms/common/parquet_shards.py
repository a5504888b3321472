"""``WriteParquetShards``: write a PCollection of schema rows as deterministic, sorted Parquet shards.

Beam's ``WriteToParquet`` writes rows in bundle order into runner-chosen shards, so two runs give different
files. Our contract is that a re-run gives the same output, and the trainer wants predictable row groups, so
rows are assigned to a shard by a hash of their id, each shard is sorted by id and written whole with pyarrow
(``row_group_size`` rows per group, zstd) through Beam's ``FileSystems`` (local, gs://, s3://).

Only shards that hold rows are written: readers such as Hugging Face ``datasets`` refuse a zero-row Parquet
file beside non-empty ones ("BatchSize must be greater than 0"). An output that is empty as a whole is one
zero-row file ``part-00000-of-00001.parquet`` carrying the schema, so it still opens (``datasets`` alone
refuses it, as it refuses any zero-row file); readers list ``part-*.parquet`` rather than assume every index.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from cmtp.schemas.ranges import check_ranges, option
from cmtp.schemas.validate import rows_to_table

from .ids import shard_of

DEFAULT_TARGET_SHARD_ROWS = 100_000
DEFAULT_ROW_GROUP_SIZE = 8192


def shard_path(directory: str, index: int, count: int) -> str:
    return FileSystems.join(directory, f"part-{index:05d}-of-{count:05d}.parquet")


def clear_shards(directory: str) -> None:
    """Delete earlier ``part-*.parquet`` shards so a re-run with another shard count leaves no strays."""
    pattern = FileSystems.join(directory, "part-*.parquet")
    matched = [m.path for r in FileSystems.match([pattern]) for m in r.metadata_list]
    if matched:
        FileSystems.delete(matched)


def write_table(path: str, table: pa.Table, row_group_size: int = DEFAULT_ROW_GROUP_SIZE) -> None:
    with FileSystems.create(path) as fh:
        pq.write_table(table, fh, row_group_size=row_group_size, compression="zstd")


class _WriteShardFn(beam.DoFn):
    def __init__(self, directory: str, schema: pa.Schema, sort_key: Callable[[dict], Any], row_group_size: int):
        self.directory, self.schema, self.sort_key, self.row_group_size = directory, schema, sort_key, row_group_size

    def process(self, element):
        (index, count), rows = element
        rows = sorted((r for r in rows if r is not None), key=self.sort_key)
        path = shard_path(self.directory, index, count)
        write_table(path, rows_to_table(rows, self.schema, validate=True), self.row_group_size)
        yield {"path": path, "rows": len(rows)}


class _AssignShardFn(beam.DoFn):
    def __init__(self, key: Callable[[dict], str], shard_count: Callable[[int], int]):
        self.key, self.shard_count = key, shard_count

    def process(self, row, total):
        count = self.shard_count(total)
        yield (shard_of(self.key(row), count), count), row


class WriteParquetShards(beam.PTransform):
    """Write schema rows into ``directory``; the output PCollection has one ``{path, rows}`` per shard.

    ``num_shards`` fixes the shard count; otherwise it is ``ceil(rows / target_shard_rows)`` (at least 1).
    ``key`` gives the id a row is sharded and sorted by.
    """

    def __init__(
        self,
        directory: str,
        schema: pa.Schema,
        key: Callable[[dict], str],
        num_shards: int | None = None,
        target_shard_rows: int = DEFAULT_TARGET_SHARD_ROWS,
        row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
    ):
        super().__init__()
        self.directory, self.schema, self.key = directory, schema, key
        self.num_shards, self.target_shard_rows, self.row_group_size = num_shards, target_shard_rows, row_group_size

    def expand(self, rows):
        fixed, target = self.num_shards, self.target_shard_rows

        def shard_count(total: int) -> int:
            if total == 0:  # an empty output is one zero-row file
                return 1
            return fixed or max(1, math.ceil(total / target))

        count = rows | "CountRows" >> beam.combiners.Count.Globally()
        keyed = rows | "AssignShard" >> beam.ParDo(
            _AssignShardFn(self.key, shard_count), total=beam.pvalue.AsSingleton(count))
        schema_only = count | "SchemaOnlyIfEmpty" >> beam.FlatMap(
            lambda total: [((0, 1), None)] if total == 0 else [])
        return (
            (keyed, schema_only)
            | "Merge" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(_WriteShardFn(self.directory, self.schema, self.key, self.row_group_size))
        )


class StreamingShardWriter:
    """Rows streamed into ``num_shards`` shards (``shard_of`` their key), ``row_group_size`` rows per group, with
    the names and the empty-shard rule of :class:`WriteParquetShards`. For a stage that makes its rows in one
    process, already in key order, and cannot hold a shard in memory (mine merges its partitions that way)."""

    def __init__(self, directory: str, schema: pa.Schema, key: Callable[[dict], str], num_shards: int,
                 row_group_size: int = DEFAULT_ROW_GROUP_SIZE):
        if not FileSystems.exists(directory):
            FileSystems.mkdirs(directory)
        clear_shards(directory)
        self.directory, self.schema, self.key, self.row_group_size = directory, schema, key, row_group_size
        self.paths = [shard_path(directory, i, num_shards) for i in range(num_shards)]
        self.files = [FileSystems.create(path) for path in self.paths]
        self.writers = [pq.ParquetWriter(fh, schema, compression="zstd") for fh in self.files]
        self.buffers: list[list[dict]] = [[] for _ in range(num_shards)]
        self.shard_rows = [0] * num_shards
        self.rows = 0

    def add(self, row: dict) -> None:
        shard = shard_of(self.key(row), len(self.writers))
        self.buffers[shard].append(row)
        self.shard_rows[shard] += 1
        self.rows += 1
        if len(self.buffers[shard]) >= self.row_group_size:
            self._flush(shard)

    def _flush(self, shard: int) -> None:
        if self.buffers[shard]:
            self.writers[shard].write_table(rows_to_table(self.buffers[shard], self.schema),
                                            row_group_size=self.row_group_size)
            self.buffers[shard] = []

    def close(self) -> list[str]:
        """Flush and close; shards that got no row are removed (an output empty as a whole is one zero-row file,
        ``part-00000-of-00001``, as the Beam writer makes it). Returns the shards written."""
        for shard, (writer, fh) in enumerate(zip(self.writers, self.files, strict=True)):
            self._flush(shard)
            writer.close()
            fh.close()
        empty = [p for p, rows in zip(self.paths, self.shard_rows, strict=True) if rows == 0]
        if empty:
            FileSystems.delete(empty)
        self.paths = [p for p in self.paths if p not in empty]
        if self.rows == 0:
            self.paths = [shard_path(self.directory, 0, 1)]
            write_table(self.paths[0], rows_to_table([], self.schema), self.row_group_size)
        return self.paths


@dataclass
class ShardOptions:
    """How a stage's outputs are cut into Parquet files: the runner options every Beam stage shares."""

    num_shards: int | None = option(None, "output shards (default: rows / target-shard-rows)", ge=1)
    target_shard_rows: int = option(DEFAULT_TARGET_SHARD_ROWS, "rows per shard when --num-shards is not given",
                                    ge=1)
    row_group_size: int = option(DEFAULT_ROW_GROUP_SIZE, "Parquet row-group size (the trainer streams row groups)",
                                 ge=1)

    def __post_init__(self):
        check_ranges(self)

    def writer(self, directory, schema, key):
        return WriteParquetShards(directory, schema, key, self.num_shards, self.target_shard_rows,
                                  self.row_group_size)


SHARD_OPTIONS = tuple(f.name for f in fields(ShardOptions))  # the Beam stages' shard runner options
