"""A stage's Parquet input as units of work: one row group each, read as an Arrow table by the step that works on it.

Beam's ``ReadFromParquet`` is a source (``Read`` / splittable DoFn) that some runners do not translate: the
DaskRunner supports only Create, ParDo, GroupByKey and Flatten, and skips the rest silently (dedup failed with
``'NoneType' object has no attribute 'map'``). The row groups are listed on the driver, from the footers, and each
is read inside the DoFn that works on it: the elements are :class:`Unit` descriptors, so the rows never cross a
fusion break (the local runner would hold them all in memory), and a row group is the unit of parallelism
Parquet offers anyway. A unit knows its rows' place in the whole input (``offset``), so later steps can name a
row by one integer and read it back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from cmtp.schemas.errors import CmtpError

from .dead_letters import dead_letter
from .paths import row_groups

PAIR_COLUMNS = ("pair_id", "title", "passage")  # what dedup and score need of a ``pair`` file


@dataclass(frozen=True)
class Unit:
    """Row group ``row_group`` of ``path``: the ``index``-th of the input, its rows numbered from ``offset``."""

    index: int
    path: str
    row_group: int
    rows: int
    offset: int

    @property
    def name(self) -> str:
        return f"u{self.index:07d}"


def _compatible(have: pa.DataType, want: pa.DataType) -> bool:
    for test in (pa.types.is_string, pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean):
        if test(want):
            return test(have) or (test is pa.types.is_string and pa.types.is_large_string(have))
    return have.equals(want)


def input_units(files: list[str], schema: pa.Schema, needed: tuple[str, ...] = ()) -> list[Unit]:
    """Every row group of ``files`` as a unit, in file order. A file that is not (complete) Parquet, lacks one of
    the schema's required columns or ``needed``, or holds a schema column of another type (an int64 ``passage``)
    is one error naming the file and the column, before any pipeline starts."""
    required = tuple(dict.fromkeys([*needed, *(f.name for f in schema if not f.nullable)]))
    units, offset = [], 0
    for group in row_groups(files, required, schema.metadata[b"cmtp.schema"].decode()):
        if group.row_group == 0:
            _check_types(group.path, schema)
        units.append(Unit(len(units), group.path, group.row_group, group.rows, offset))
        offset += group.rows
    return units


def _check_types(path: str, schema: pa.Schema) -> None:
    with FileSystems.open(path) as fh:
        have = pq.ParquetFile(fh).schema_arrow
    for field in schema:
        if field.name in have.names and not _compatible(have.field(field.name).type, field.type):
            raise CmtpError(f"{path}: column {field.name} is {have.field(field.name).type}, expected {field.type} "
                            f"(schema {schema.metadata[b'cmtp.schema'].decode()})")


def read_unit(unit: Unit, schema: pa.Schema, columns: list[str] | None = None) -> pa.Table:
    """The unit's rows with ``columns`` of ``schema`` (default: all), typed as the schema says; a nullable column
    the file does not have is all nulls."""
    names = columns or schema.names
    with FileSystems.open(unit.path) as fh:
        parquet = pq.ParquetFile(fh)
        present = [n for n in names if n in parquet.schema_arrow.names]
        table = parquet.read_row_group(unit.row_group, columns=present)
    arrays = [table.column(n).cast(schema.field(n).type) if n in present else pa.nulls(unit.rows, schema.field(n).type)
              for n in names]
    return pa.Table.from_arrays(arrays, schema=pa.schema([schema.field(n) for n in names]))


def split_nulls(table: pa.Table, schema: pa.Schema, stage: str) -> tuple[pa.Table, list[dict]]:
    """(rows whose required fields are all set, dead letters ``missing_field`` naming the first null field of each
    other row): one bad record costs that record, never the job."""
    bad = np.zeros(table.num_rows, dtype=bool)
    first: dict[int, str] = {}
    for field in schema:
        if field.nullable or field.name not in table.column_names:
            continue
        nulls = table.column(field.name).is_null().to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(nulls & ~bad):
            first[int(i)] = field.name
        bad |= nulls
    if not bad.any():
        return table, []
    dead = []
    for i in np.flatnonzero(bad):
        row = table.slice(int(i), 1).to_pylist()[0]
        dead.append(dead_letter(stage, "missing_field", row.get("source") or "?", row.get("source_file") or "?",
                                row.get("record_key") or "?", {k: v for k, v in row.items() if isinstance(v, str)},
                                f"{first[int(i)]} is null", row.get("pair_id") or row.get("text_id")))
    return table.filter(pc.invert(pa.array(bad))), dead
