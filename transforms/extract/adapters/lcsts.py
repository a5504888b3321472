"""LCSTS (short Weibo texts with human summaries): TSV ``summary \\t text`` (CLGE layout); the summary is the
title."""

from ..source_file import Extracted, Rejected
from .base import Adapter, register_adapter


@register_adapter("lcsts")
class LcstsAdapter(Adapter):
    def read(self, f):
        for number, line in f.lines():
            if isinstance(line, Rejected):
                yield line
                continue
            cols = line.split("\t")
            if len(cols) != 2:
                yield Rejected(f"L{number}", "bad_columns", f"{len(cols)} tab-separated columns", line)
                continue
            yield Extracted(f"L{number}", cols[0], cols[1], {})
