"""Zhihu answers: webtext2019zh lines (qid, title, desc, topic, star, content, answer_id) or raw Zhihu API v4
answer objects (``question.title``, HTML ``content``). Title = question title (+ description with
``title_with_desc``); passage = the answer body."""

from .base import JsonRecordAdapter, pick, register_adapter, text_field


@register_adapter("zhihu")
class ZhihuAdapter(JsonRecordAdapter):
    @classmethod
    def option_names(cls):
        return ("title_with_desc",)

    def map(self, obj):
        if isinstance(obj.get("question"), dict):  # API v4 answer object
            title = text_field(obj, "question.title")
            meta = {"answer_id": obj.get("id"), "question_id": obj["question"].get("id"),
                    "voteup_count": obj.get("voteup_count"), "url": obj.get("url")}
            return title, text_field(obj, "content"), {k: v for k, v in meta.items() if v is not None}
        title = text_field(obj, "title")
        desc = text_field(obj, "desc", required=False)
        if self.options.get("title_with_desc") and desc:
            title = f"{title} {desc}"
        return title, text_field(obj, "content"), pick(obj, "qid", "answer_id", "topic", "star", "desc")
