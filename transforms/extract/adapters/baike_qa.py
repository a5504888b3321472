"""Baike: baike2018qa lines (qid, category, title, desc, answer) and Baike entries (title + summary/abstract)."""

from .base import JsonRecordAdapter, pick, register_adapter, text_field


@register_adapter("baike_qa")
class BaikeQaAdapter(JsonRecordAdapter):
    def map(self, obj):
        title = text_field(obj, "title")
        body = text_field(obj, "answer", "summary", "abstract")
        return title, body, pick(obj, "qid", "category", "desc", "url", "id")
