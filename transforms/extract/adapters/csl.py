"""CSL (Chinese Scientific Literature): JSON lines (title, abstract, keywords, category, discipline) or the
benchmark TSVs: ``title \\t abstract``, ``to title \\t abstract \\t title`` (ts) and ``task \\t abstract \\t
keywords|discipline`` (kg, cls_dcp: no title, so the abstract only feeds pretraining text)."""

from ..source_file import Extracted, Rejected
from .base import JsonRecordAdapter, pick, register_adapter, text_field


@register_adapter("csl")
class CslAdapter(JsonRecordAdapter):
    def map(self, obj):
        return text_field(obj, "title"), text_field(obj, "abstract"), pick(
            obj, "keywords", "category", "discipline", "id")

    def read(self, f):
        if f.first_byte in (b"{", b"["):
            yield from super().read(f)
            return
        for number, line in f.lines():
            if isinstance(line, Rejected):
                yield line
                continue
            key, cols = f"L{number}", line.split("\t")
            if len(cols) == 2:
                yield Extracted(key, cols[0], cols[1], {})
            elif len(cols) == 3 and cols[0] == "to title":
                yield Extracted(key, cols[2], cols[1], {"task": "ts"})
            elif len(cols) == 3:
                yield Extracted(key, None, cols[1], {"task": cols[0], "label": cols[2]})
            else:
                yield Rejected(key, "bad_columns", f"{len(cols)} tab-separated columns", line)
