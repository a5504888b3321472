"""Generic tables: JSON lines / JSON array, CSV / TSV (with a header row) or Parquet, with the title and
passage columns named by ``title_field`` / ``passage_field`` (defaults ``title`` / ``passage``). Other
columns named in ``meta_fields`` (comma-separated) go to ``meta``."""

import csv

import pyarrow.parquet as pq

from ..source_file import Rejected
from .base import JsonRecordAdapter, pick, register_adapter, text_field


@register_adapter("generic")
class GenericAdapter(JsonRecordAdapter):
    @classmethod
    def option_names(cls):
        return ("title_field", "passage_field", "meta_fields")

    def _fields(self):
        meta = [m for m in str(self.options.get("meta_fields", "")).split(",") if m]
        return self.options.get("title_field", "title"), self.options.get("passage_field", "passage"), meta

    def map(self, obj):
        title_f, passage_f, meta_f = self._fields()
        return text_field(obj, title_f, required=False), text_field(obj, passage_f), pick(obj, *meta_f)

    def read(self, f):
        path = f.path.lower()
        if path.endswith(".parquet"):
            yield from self.map_records(self._parquet(f))
        elif path.endswith((".csv", ".tsv", ".csv.gz", ".tsv.gz")):
            yield from self.map_records(self._delimited(f, "\t" if ".tsv" in path else ","))
        else:
            yield from super().read(f)

    @staticmethod
    def _parquet(f):
        """Rows a record batch at a time (the whole file was read into memory first)."""
        with f.open() as fh:
            offset = 0
            for batch in pq.ParquetFile(fh).iter_batches(batch_size=4096):
                for i, row in enumerate(batch.to_pylist()):
                    yield str(offset + i), row
                offset += batch.num_rows

    @staticmethod
    def _delimited(f, delimiter):
        header = None
        for number, line in f.lines():
            if isinstance(line, Rejected):
                yield line.key, line
                continue
            cols = next(csv.reader([line], delimiter=delimiter))
            if header is None:
                header = cols
                continue
            if len(cols) != len(header):
                yield f"L{number}", Rejected(f"L{number}", "bad_columns", f"{len(cols)} != {len(header)}", line)
                continue
            yield f"L{number}", dict(zip(header, cols, strict=True))
