"""News: JSON lines (title + content/text/body), Sogou ``<doc><contenttitle><content>`` pseudo-XML (often
GB18030), or a THUCNews-style text file whose first line is the title and the rest the body."""

import re

from ..source_file import Extracted, Rejected
from .base import JsonRecordAdapter, pick, register_adapter, text_field

_DOC = re.compile(r"<doc>(.*?)</doc>", re.S)
_TAG = {name: re.compile(rf"<{name}>(.*?)</{name}>", re.S) for name in ["url", "docno", "contenttitle", "content"]}


@register_adapter("news")
class NewsAdapter(JsonRecordAdapter):
    def map(self, obj):
        return text_field(obj, "title"), text_field(obj, "content", "text", "body"), pick(
            obj, "id", "url", "label", "category", "date")

    def read(self, f):
        if f.first_byte in (b"{", b"["):
            yield from super().read(f)
            return
        text, clean = f.text()
        if "<doc>" in text:
            yield from self._sogou(text, clean)
        elif text.strip():  # an empty file holds no record
            title, _, body = text.strip().partition("\n")
            yield _checked(Extracted("file", title, body, {}), clean)

    def _sogou(self, text, clean):
        for index, match in enumerate(_DOC.finditer(text)):
            fields = {k: (m.group(1) if (m := rx.search(match.group(1))) else None) for k, rx in _TAG.items()}
            if fields["contenttitle"] is None or fields["content"] is None:
                missing = "contenttitle" if fields["contenttitle"] is None else "content"
                yield Rejected(str(index), "missing_field", missing, match.group(0))
                continue
            meta = {k: fields[k] for k in ("url", "docno") if fields[k]}
            yield _checked(Extracted(str(index), fields["contenttitle"], fields["content"], meta), clean)


def _checked(record: Extracted, clean: bool):
    """When the file needed byte replacement, records holding U+FFFD go to the dead letters."""
    if not clean and ("\ufffd" in record.text or "\ufffd" in (record.title or "")):
        return Rejected(record.key, "undecodable", "bytes not valid in the file's encoding", record.text)
    return record
