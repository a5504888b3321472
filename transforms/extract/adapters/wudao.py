"""WuDao corpus JSON: a bare array, ``{"RECORDS": [...]}`` or JSON lines with ``title`` and ``content``.

Some WuDao-format dumps (e.g. the finance Q&A set) leave ``title`` empty and open ``content`` with the
question; then the leading question (up to the first question mark, 4-100 characters) becomes the title.
"""

import re

from .base import JsonRecordAdapter, pick, register_adapter, text_field

_LEADING_QUESTION = re.compile(r"^\s*(.{4,100}?[？?])\s*(.+)$", re.S)


@register_adapter("wudao")
class WudaoAdapter(JsonRecordAdapter):
    def map(self, obj):
        title = text_field(obj, "title", required=False)
        content = text_field(obj, "content")
        meta = pick(obj, "id", "uniqueKey", "titleUkey", "dataType", "url")
        if not (title or "").strip():
            match = _LEADING_QUESTION.match(content)
            if match:
                title, content = match.group(1), match.group(2)
                meta["title_from"] = "leading_question"
        return title, content, meta
