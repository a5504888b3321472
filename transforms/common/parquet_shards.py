"""``WriteParquetShards``: write a stage's output as deterministic, sorted Parquet shards without a shuffle of rows.

Our contract is that a re-run gives the same files, and the trainer wants predictable row groups, so a row's shard
is a hash of its key (``shard_of``: the id, or the dead letter's provenance), each shard is sorted by that key and
written with ``row_group_size`` rows per group (zstd) through Beam's ``FileSystems`` (local, gs://, s3://). Beam's
``WriteToParquet`` writes rows in bundle order into runner-chosen shards, and grouping every row by its shard held a
stage's whole output in one place (the local runner keeps a GroupByKey's output in memory): 18 KB per document.

Here rows never travel through Beam. The step that makes a batch of rows spills it (:func:`spill`): sorted by key,
with each row's shard hash, into an Arrow file in the stage's scratch folder; the element is the file's path. Then

    spills --count--> shard count (rows / target-shard-rows, or --num-shards)
    spills --cut by shard (side input: the count)--> sorted pieces --group paths by shard--> k-way merge --> shard

so memory is bounded by a batch (and, in the merge, by one record batch per piece), the shuffle carries paths, and
the bytes equal those of sorting each shard whole (row groups are cut at the same rows).

Only shards that hold rows are written: readers such as Hugging Face ``datasets`` refuse a zero-row Parquet
file beside non-empty ones ("BatchSize must be greater than 0"). An output that is empty as a whole is one
zero-row file ``part-00000-of-00001.parquet`` carrying the schema, so it still opens (``datasets`` alone
refuses it, as it refuses any zero-row file); readers list ``part-*.parquet`` rather than assume every index.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import posixpath
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from cmtp.schemas.ranges import check_ranges, option
from cmtp.schemas.validate import rows_to_table, validate_table

from . import scratch
from .ids import shard_of
from .progress import ProgressCounter

DEFAULT_TARGET_SHARD_ROWS = 100_000
DEFAULT_ROW_GROUP_SIZE = 8192
PIECE_BATCH_ROWS = 256  # rows per record batch of a piece: what the merge holds of each piece at a time
_KEY, _HASH, _SEQ = "_key", "_shard_hash", "_seq"


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


# -- the key of a row: its id, or for a dead letter its provenance (one rule per schema) ---------------------------
_ID_COLUMNS = {"pair": "pair_id", "scored_pair": "pair_id", "pretrain_text": "text_id",
               "training_example": "example_id", "raw_document": "doc_id"}
DEAD_LETTER_KEY = ("stage", "source", "source_file", "record_key", "reason", "item_id")


def _schema_name(schema: pa.Schema) -> str:
    return (schema.metadata or {}).get(b"cmtp.schema", b"").decode()


def sort_keys(table: pa.Table, schema: pa.Schema) -> pa.Array:
    """The key each row is sharded and sorted by: its id column, or (dead letters) the provenance fields joined
    with \\x1f, a missing item id as ''."""
    name = _schema_name(schema)
    if name == "dead_letter":
        columns = [pc.fill_null(table.column(c), "") for c in DEAD_LETTER_KEY]
        return pc.binary_join_element_wise(*columns, "\x1f").combine_chunks()
    return table.column(_ID_COLUMNS[name]).combine_chunks()


def shard_hashes(keys: list[str]) -> np.ndarray:
    """``shard_of``'s 64-bit hash of every key (``shard_of(key, n) == shard_hashes([key])[0] % n``)."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(k.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                                       "big") for k in keys), dtype=np.uint64, count=len(keys))


@dataclass(frozen=True)
class Spill:
    """A batch of an output's rows waiting in the scratch folder, sorted by key."""

    path: str
    rows: int


def spill(table: pa.Table, schema: pa.Schema, path: str, validate: bool = True) -> Spill | None:
    """Write ``table`` (an output's rows, the schema's columns) to ``path`` sorted by key, with each row's shard hash,
    for :class:`WriteParquetShards`; None (and no file) when it has no rows. The table is checked against the
    schema first: a wrong row fails here, in the step that made it, and names the field."""
    if table.num_rows == 0:
        return None
    table = pa.Table.from_arrays([table.column(f.name) for f in schema], schema=schema)
    if validate:
        validate_table(table, schema)
    keys = sort_keys(table, schema)
    table = (table.append_column(_KEY, keys)
             .append_column(_HASH, pa.array(shard_hashes(keys.to_pylist()), pa.uint64()))
             .append_column(_SEQ, pa.array(np.arange(table.num_rows, dtype=np.int64))))
    table = table.take(pc.sort_indices(table, [(_KEY, "ascending"), (_SEQ, "ascending")]))
    scratch.write_table(path, table.drop_columns([_SEQ]), PIECE_BATCH_ROWS)
    return Spill(path, table.num_rows)


def shard_count(rows: int, num_shards: int | None, target_shard_rows: int) -> int:
    if rows == 0:  # an empty output is one zero-row file
        return 1
    return num_shards or max(1, math.ceil(rows / target_shard_rows))


class _CutByShardFn(beam.DoFn):
    """A spill -> (shard, piece path) for every shard its rows fall in; a piece keeps the spill's order."""

    def __init__(self, pieces_dir: str, num_shards: int | None, target_shard_rows: int):
        self.pieces_dir, self.num_shards, self.target_shard_rows = pieces_dir, num_shards, target_shard_rows

    def process(self, item: Spill, total: int):
        count = shard_count(total, self.num_shards, self.target_shard_rows)
        if count == 1:  # the spill is the piece
            yield 0, item.path
            return
        table = scratch.read_table(item.path)
        shards = table.column(_HASH).to_numpy() % np.uint64(count)
        name = posixpath.basename(item.path)
        for shard in np.unique(shards):
            piece = table.filter(pa.array(shards == shard))
            path = posixpath.join(self.pieces_dir, f"s{int(shard):05d}", name)
            yield int(shard), scratch.write_table(path, piece, PIECE_BATCH_ROWS)


class _Cursor:
    """A sorted piece read one record batch at a time."""

    def __init__(self, order: int, path: str):
        self.order, self.batches = order, scratch.iter_batches(path)
        self.batch, self.keys, self.pos = None, [], 0

    def advance(self) -> bool:
        """Load the next non-empty batch; False at the end of the piece."""
        for batch in self.batches:
            if batch.num_rows:
                self.batch, self.keys, self.pos = batch, batch.column(_KEY).to_pylist(), 0
                return True
        return False


def merge_sorted(paths: list[str]) -> Iterator[pa.RecordBatch]:
    """The rows of sorted pieces in key order (ties: the pieces' order), as slices of their record batches: each
    step takes the run of the head piece that sorts before every other piece's next row."""
    cursors = [c for order, path in enumerate(paths) if (c := _Cursor(order, path)).advance()]
    heap = [(c.keys[0], c.order, c) for c in cursors]
    heapq.heapify(heap)
    while heap:
        _key, order, c = heapq.heappop(heap)
        if heap:
            limit, limit_order, _ = heap[0]
            end = (bisect_right if order < limit_order else bisect_left)(c.keys, limit, c.pos)
        else:
            end = len(c.keys)
        yield c.batch.slice(c.pos, end - c.pos)
        c.pos = end
        if c.pos < len(c.keys) or c.advance():
            heapq.heappush(heap, (c.keys[c.pos], c.order, c))


class _MergeShardFn(beam.DoFn):
    """(shard, piece paths) -> the shard's Parquet file, written a row group at a time."""

    def __init__(self, directory: str, schema: pa.Schema, row_group_size: int, num_shards: int | None,
                 target_shard_rows: int, progress_dir: str | None = None):
        self.directory, self.schema, self.row_group_size = directory, schema, row_group_size
        self.num_shards, self.target_shard_rows, self.progress_dir = num_shards, target_shard_rows, progress_dir

    def setup(self):
        self.progress = ProgressCounter(self.progress_dir, "write")

    def finish_bundle(self):
        self.progress.flush()

    def process(self, element, total: int):
        shard, pieces = element
        path = shard_path(self.directory, shard, shard_count(total, self.num_shards, self.target_shard_rows))
        rows = 0
        with FileSystems.create(path) as fh, pq.ParquetWriter(fh, self.schema, compression="zstd") as writer:
            pending: list[pa.RecordBatch] = []
            held = 0
            for part in merge_sorted(sorted(pieces)):
                pending.append(part.select(self.schema.names))
                held += part.num_rows
                if held >= self.row_group_size:
                    table = pa.Table.from_batches(pending)
                    cut = held - held % self.row_group_size
                    self._write(writer, table.slice(0, cut))
                    pending, held = table.slice(cut).to_batches(), held - cut
                    rows += cut
            if held:
                self._write(writer, pa.Table.from_batches(pending))
                rows += held
        yield {"path": path, "rows": rows}

    def _write(self, writer: pq.ParquetWriter, table: pa.Table) -> None:
        writer.write_table(pa.Table.from_arrays(table.columns, schema=self.schema), row_group_size=self.row_group_size)
        self.progress.add(table.num_rows)


class _WriteEmptyFn(beam.DoFn):
    def __init__(self, directory: str, schema: pa.Schema, row_group_size: int):
        self.directory, self.schema, self.row_group_size = directory, schema, row_group_size

    def process(self, _once, total: int):
        if total == 0:
            path = shard_path(self.directory, 0, 1)
            write_table(path, self.schema.empty_table(), self.row_group_size)
            yield {"path": path, "rows": 0}


class WriteParquetShards(beam.PTransform):
    """:class:`Spill` elements -> the output's shards in ``directory``; the output PCollection has one ``{path,
    rows}`` per shard. ``num_shards`` fixes the shard count; otherwise it is ``ceil(rows / target_shard_rows)``
    (at least 1). Pieces go to ``scratch_dir`` (default: ``_pieces`` beside the shards' folder's spills)."""

    def __init__(self, directory: str, schema: pa.Schema, scratch_dir: str, num_shards: int | None = None,
                 target_shard_rows: int = DEFAULT_TARGET_SHARD_ROWS, row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
                 progress_dir: str | None = None):
        super().__init__()
        self.directory, self.schema, self.scratch_dir = directory, schema, scratch_dir
        self.num_shards, self.target_shard_rows, self.row_group_size = num_shards, target_shard_rows, row_group_size
        self.progress_dir = progress_dir

    def expand(self, spills):
        total = beam.pvalue.AsSingleton(
            spills | "Rows" >> beam.Map(lambda s: s.rows) | "Total" >> beam.CombineGlobally(sum))
        written = (
            spills
            | "CutByShard" >> beam.ParDo(_CutByShardFn(self.scratch_dir, self.num_shards, self.target_shard_rows),
                                         total=total)
            | "GroupByShard" >> beam.GroupByKey()
            | "MergeShard" >> beam.ParDo(_MergeShardFn(self.directory, self.schema, self.row_group_size,
                                                       self.num_shards, self.target_shard_rows, self.progress_dir),
                                         total=total)
        )
        empty = (spills.pipeline | "Once" >> beam.Create([None])
                 | "IfEmpty" >> beam.ParDo(_WriteEmptyFn(self.directory, self.schema, self.row_group_size),
                                           total=total))
        return (written, empty) | "Written" >> beam.Flatten()


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

    def writer(self, directory: str, schema: pa.Schema, scratch_dir: str,
               progress_dir: str | None = None) -> WriteParquetShards:
        return WriteParquetShards(directory, schema, scratch_dir, self.num_shards, self.target_shard_rows,
                                  self.row_group_size, progress_dir)


SHARD_OPTIONS = tuple(f.name for f in fields(ShardOptions))  # the Beam stages' shard runner options
