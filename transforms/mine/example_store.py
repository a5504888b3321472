"""The examples mine works on, on disk: every input row in one Arrow file sorted by example id, read a block at a time.

Scored pairs and labeled rows arrive in chunks (a row group, a run of lines); each chunk is sorted by id and written
as a piece, and the pieces are merged (``parquet_shards.merge_sorted``, ties in input order) into
``examples.arrow``. Mining then reads the examples of one query block at a time and the pool and the queries
stream from the file, so mine holds no list of the corpus (1M pairs as Python objects took about 2 GB).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cmtp.transforms.common import scratch
from cmtp.transforms.common.parquet_shards import merge_sorted

_STR, _TEXTS = pa.string(), pa.list_(pa.string())
EXAMPLE_SCHEMA = pa.schema([("example_id", _STR), ("query", _STR), ("pos", _TEXTS), ("source", _STR),
                            ("task", _STR), ("neg", _TEXTS), ("instruction", _STR), ("cluster_id", _STR)])
BLOCK_ROWS = 4096


@dataclass
class Example:
    example_id: str
    query: str
    pos: list[str]
    source: str
    task: str
    neg: list[str] = field(default_factory=list)  # labeled negatives
    instruction: str | None = None
    cluster_id: str | None = None


def example_table(examples: list[Example]) -> pa.Table:
    return pa.table({f.name: [getattr(e, f.name) for e in examples] for f in fields(Example)}, schema=EXAMPLE_SCHEMA)


class ExampleStore:
    """``examples.arrow`` in a folder: :meth:`build` writes it, the rest reads it (memory-mapped)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def build(cls, path: Path, chunks: Iterable[pa.Table]) -> ExampleStore:
        """Every chunk (``EXAMPLE_SCHEMA`` tables, in input order) merged into one file sorted by example id."""
        path = Path(path)
        pieces = path.parent / f"{path.stem}-pieces"
        paths = []
        for number, chunk in enumerate(chunks):
            if chunk.num_rows:
                order = pc.sort_indices(chunk.append_column("_seq", pa.array(np.arange(chunk.num_rows))),
                                        [("example_id", "ascending"), ("_seq", "ascending")])
                chunk = chunk.take(order)
                paths.append(scratch.write_table(str(pieces / f"{number:07d}.arrow"),
                                                 chunk.append_column("_key", chunk.column("example_id")), 256))
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, EXAMPLE_SCHEMA) as writer:
            pending, held = [], 0
            for part in merge_sorted(paths):  # slices of a few rows each: gathered into record batches of a block
                pending.append(part.select(EXAMPLE_SCHEMA.names))
                held += part.num_rows
                if held >= BLOCK_ROWS:
                    writer.write_table(pa.Table.from_batches(pending).combine_chunks())
                    pending, held = [], 0
            if pending:
                writer.write_table(pa.Table.from_batches(pending).combine_chunks())
        scratch.remove(str(pieces))
        return cls(path)

    def _table(self) -> pa.Table:
        return scratch.read_table(str(self.path))

    def __len__(self) -> int:
        return self._table().num_rows

    def read(self, start: int, stop: int) -> list[Example]:
        return [Example(**row) for row in self._table().slice(start, stop - start).to_pylist()]

    def blocks(self, rows: int = BLOCK_ROWS) -> Iterator[list[Example]]:
        total = len(self)
        for start in range(0, total, rows):
            yield self.read(start, min(start + rows, total))

    def column(self, name: str) -> Iterator[list]:
        """One column, a record batch at a time."""
        for batch in self._table().column(name).chunks:
            yield batch.to_pylist()

    def source_counts(self) -> Counter:
        return Counter({item["values"]: item["counts"]
                        for item in pc.value_counts(self._table().column("source")).to_pylist()})
