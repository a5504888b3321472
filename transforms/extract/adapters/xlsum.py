"""XL-Sum (Chinese): JSON lines (id, url, title, summary, text); title -> summary by default, or -> text with
``passage=text``."""

from cmtp.schemas.errors import CmtpError

from .base import JsonRecordAdapter, pick, register_adapter, text_field


@register_adapter("xlsum")
class XlsumAdapter(JsonRecordAdapter):
    @classmethod
    def option_names(cls):
        return ("passage",)

    def map(self, obj):
        field = self.options.get("passage", "summary")
        if field not in ("summary", "text"):
            raise CmtpError("xlsum option passage must be 'summary' or 'text'")
        return text_field(obj, "title"), text_field(obj, field), pick(obj, "id", "url")
