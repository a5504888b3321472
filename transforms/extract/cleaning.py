"""Text normalisation for extracted records: markup, links, addresses, control characters, width, script.

Each function does one step; :class:`Cleaner` applies the steps the config turns on. HTML is removed with
regular expressions on purpose: dump bodies are fragments (Zhihu answers, forum posts) that need their text
and line breaks, not a DOM, and a parser per record costs more than the whole remaining pipeline.
"""

from __future__ import annotations

import html
import re
import sys
import unicodedata
from functools import lru_cache

from .config import ExtractConfig

_BLOCK_TAGS = re.compile(r"<\s*(?:br|/p|/div|/li|/h[1-6]|/tr|p|div|li|tr|h[1-6])\b[^>]*>", re.I)
_DROP_ELEMENTS = re.compile(r"<\s*(script|style|noscript)\b.*?<\s*/\s*\1\s*>", re.I | re.S)
_TAGS = re.compile(r"<[^<>]{0,2000}>")
_URL = re.compile(
    r"(?:(?:https?|ftp)://|www\.)[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+", re.I
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_SPACES = re.compile(r"[^\S\n]+")
_NEWLINES = re.compile(r"\s*\n\s*")
_CJK_SPACE = re.compile(r"(?<=[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]) (?=[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef])")


_MD_IMAGE = re.compile(r"!\[([^\]\n]*)\]\([^)\n]*\)")
_MD_LINK = re.compile(r"\[([^\]\n]+)\]\([^)\n]*\)")
_MD_RULE = re.compile(r"^[ \t]*([-*_])(?:[ \t]*\1){2,}[ \t]*$", re.M)
_MD_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+", re.M)
_MD_BULLET = re.compile(r"^[ \t]*[-*+][ \t]+", re.M)
_MD_QUOTE = re.compile(r"^[ \t]*>[ \t]?", re.M)
_MD_STRONG = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
# single-star emphasis: Chinese has no spaces around it, so only ASCII letters and digits count as "inside a
# word" (3*4=12 stays)
_MD_EM = re.compile(r"(?<![A-Za-z0-9*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![A-Za-z0-9*])")
_MD_CODE = re.compile(r"`{1,3}([^`\n]+?)`{1,3}")
_MD_STRAY_STARS = re.compile(r"\*{2,}")


def strip_markdown(text: str) -> str:
    """Markdown markup -> its text: images and links keep their text, heading / list / quote markers and rules
    go, emphasis and code marks go (``**重点**`` -> ``重点``); a stray ``**`` left unpaired goes too. Like HTML,
    with regular expressions: dump bodies are fragments, and a Markdown parser would also rewrite plain text."""
    text = _MD_IMAGE.sub(r"\1", text)
    text = _MD_LINK.sub(r"\1", text)
    text = _MD_RULE.sub("", text)
    text = _MD_HEADING.sub("", text)
    text = _MD_BULLET.sub("", text)
    text = _MD_QUOTE.sub("", text)
    text = _MD_STRONG.sub(r"\2", text)
    text = _MD_EM.sub(r"\1", text)
    text = _MD_CODE.sub(r"\1", text)
    return _MD_STRAY_STARS.sub("", text)


def strip_html(text: str) -> str:
    text = _DROP_ELEMENTS.sub(" ", text)
    text = _BLOCK_TAGS.sub("\n", text)
    text = _TAGS.sub("", text)
    return html.unescape(text)


@lru_cache(maxsize=1)
def _control_chars() -> re.Pattern:
    """One character class of every control (Cc, but newline and tab), format (Cf: zero-width, BOM, bidi),
    surrogate and private-use code point, built once per process from this Python's Unicode tables."""
    ranges, start, prev = [], None, None
    for cp in range(sys.maxunicode + 1):
        hit = unicodedata.category(chr(cp)) in ("Cc", "Cf", "Cs", "Co") and chr(cp) not in "\n\t"
        if hit and start is None:
            start = cp
        if not hit and start is not None:
            ranges.append((start, prev))
            start = None
        prev = cp
    if start is not None:
        ranges.append((start, prev))
    body = "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)
    return re.compile(f"[{body}]+")


def remove_control_chars(text: str) -> str:
    """Drop control (Cc, but newline and tab), format (Cf), surrogate and private-use characters."""
    return _control_chars().sub("", text)


_ESCAPED = re.compile(r"\\r\\n|\\[nrt]")


def unescape_whitespace(text: str) -> str:
    """Literal ``\\n``, ``\\r\\n``, ``\\r`` and ``\\t`` sequences (text JSON-encoded twice, common in news
    dumps) become the newline or space they stood for."""
    return _ESCAPED.sub(lambda m: " " if m.group(0) == "\\t" else "\n", text)


def collapse_whitespace(text: str, keep_newlines: bool = True) -> str:
    text = _SPACES.sub(" ", text)
    text = _NEWLINES.sub("\n", text) if keep_newlines else re.sub(r"\s+", " ", text)
    return _CJK_SPACE.sub("", text).strip()


def collapse_repeated(text: str, min_unit: int = 20) -> str:
    """``X X`` or ``X X X`` (the same body pasted 2-4 times, a WuDao artefact) becomes ``X``."""
    compact = text.strip()
    for times in (2, 3, 4):
        if len(compact) % times == 0:
            unit = compact[: len(compact) // times]
            if len(unit) >= min_unit and unit * times == compact:
                return unit
    return text


class Cleaner:
    """Applies the enabled normalisation steps to titles and passages; :meth:`clean` also says which steps
    changed the text (the manifest counts them)."""

    def __init__(self, config: ExtractConfig):
        self.config = config
        self._t2s = None
        if config.t2s:
            import opencc

            self._t2s = opencc.OpenCC("t2s")

    def __call__(self, text: str, is_title: bool = False) -> str:
        return self.clean(text, is_title)[0]

    def clean(self, text: str, is_title: bool = False) -> tuple[str, list[str]]:
        """(cleaned text, names of the steps that changed it)."""
        c = self.config
        changed: list[str] = []

        def step(name: str, fn, value: str) -> str:
            result = fn(value)
            if result != value:
                changed.append(name)
            return result

        if c.strip_html:
            text = step("html", strip_html, text)
        if c.nfkc:
            text = step("nfkc", lambda t: unicodedata.normalize("NFKC", t), text)
        if c.unescape_whitespace:
            text = step("escaped_whitespace", unescape_whitespace, text)
        if c.strip_markdown:
            text = step("markdown", strip_markdown, text)
        if c.strip_urls:
            text = step("urls", lambda t: _URL.sub(" ", t), text)
        if c.strip_emails:
            text = step("emails", lambda t: _EMAIL.sub(" ", t), text)
        text = step("control_chars", remove_control_chars, text)
        if self._t2s is not None:
            text = step("t2s", self._t2s.convert, text)
        text = collapse_whitespace(text, keep_newlines=not is_title)
        if c.collapse_repeated_passage and not is_title:
            text = step("repeated_passage", collapse_repeated, text)
        return text, changed
