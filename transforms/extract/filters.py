"""Quality filters on a cleaned (title, passage) pair. Each returns a drop reason, or None to keep.

The reasons are the manifest's and the dead letters' vocabulary: ``title_too_short``, ``placeholder_title``,
``passage_too_long``,
``low_cjk_ratio``, ``repetitive_lines``, ``repetitive_ngrams``, ``blocklist``, ``title_in_passage_head``.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from importlib import resources

import numpy as np

from cmtp.schemas.errors import CmtpError
from cmtp.transforms.common.text import char_ngram_hashes, compare_form, without_punctuation

from .config import ExtractConfig

_NOT_CJK = re.compile(r"[^\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]+")
_SPACE = re.compile(r"\s+")


_ID_LIKE = re.compile(r"[A-Za-z0-9]+(?:[-_.:/#=][A-Za-z0-9]+)*")
_PLACEHOLDERS = frozenset({"untitled", "notitle", "null", "none", "nan", "na", "undefined", "title", "reserved",
                           "test", "default", "unknown", "empty", "placeholder", "tbd", "todo", "xxx"})


def is_placeholder_title(title: str) -> bool:
    """A title that is an id or a placeholder, not words: no CJK character, one run of ASCII letters and digits
    (joined by ``-_.:/#=``) with a digit in it (``reserved-43243x1F``, ``doc_000123``, ``a1b2c3``), or a
    known placeholder word (``untitled``, ``null``, ...). English titles have spaces and no such ids."""
    t = title.strip()
    if _NOT_CJK.sub("", t):
        return False
    if normalize_for_match(t) in _PLACEHOLDERS:
        return True
    return bool(_ID_LIKE.fullmatch(t)) and any(ch.isdigit() for ch in t)


def cjk_ratio(text: str) -> float:
    visible = len(_SPACE.sub("", text))
    return len(_NOT_CJK.sub("", text)) / visible if visible else 0.0


def dup_line_ratio(text: str) -> float:
    """Share of characters in lines that occur more than once (Gopher-style, for line-structured bodies)."""
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if len(lines) < 2:
        return 0.0
    counts = Counter(lines)
    total = sum(len(line) for line in lines)
    return sum(len(line) for line in lines if counts[line] > 1) / total


def dup_ngram_ratio(text: str, n: int) -> float:
    """Share of characters covered by character n-grams that occur more than once.

    Vectorised: a 64-bit polynomial hash of every n-gram (collisions are negligible at passage sizes), the
    repeated ones found with ``np.unique``, and their coverage by a difference array.
    """
    compact = without_punctuation(text)
    if len(compact) < 2 * n:
        return 0.0
    hashes = char_ngram_hashes(compact, n)
    _, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
    starts = np.flatnonzero(counts[inverse] > 1)
    if not len(starts):
        return 0.0
    delta = np.zeros(len(compact) + 1, dtype=np.int32)
    np.add.at(delta, starts, 1)
    np.add.at(delta, starts + n, -1)
    return float(np.count_nonzero(np.cumsum(delta[:-1]))) / len(compact)


def normalize_for_match(text: str) -> str:
    """The compare form (``transforms/common/text.py``). Cleaned text is NFKC already; blocklist terms are
    NFKC-normalised when loaded."""
    return compare_form(text)


def load_blocklist(extra_paths: list[str] | None = None) -> list[str]:
    """The shipped ``blocklist_zh.txt`` plus the user's files: one term per line, ``#`` starts a comment."""
    texts = [resources.files(__package__).joinpath("blocklist_zh.txt").read_text(encoding="utf-8")]
    for path in extra_paths or []:
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path) as fh:
            data = fh.read()
        try:
            texts.append(data.decode("utf-8"))
        except UnicodeDecodeError as exc:  # a worker's decode error named neither the file nor the option
            raise CmtpError(f"blocklist {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); give one term per "
                            "line") from None
    terms = set()
    for text in texts:
        for line in text.splitlines():
            term = normalize_for_match(unicodedata.normalize("NFKC", line.split("#", 1)[0]))
            if term:
                terms.add(term)
    return sorted(terms)


class PairFilter:
    """All quality filters of one config; :meth:`title_reason` / :meth:`passage_reason` / :meth:`pair_reason`."""

    def __init__(self, config: ExtractConfig):
        self.c = config
        self._block = None
        if config.blocklist:
            terms = load_blocklist(config.extra_blocklists)
            self._block = re.compile("|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True)))

    def title_reason(self, title: str) -> str | None:
        if len(title) < self.c.title_min_chars:
            return "title_too_short"
        if len(title) > self.c.title_max_chars:
            return "title_too_long"
        if self.c.drop_placeholder_titles and is_placeholder_title(title):
            return "placeholder_title"
        if self._block is not None and self._block.search(normalize_for_match(title)):
            return "blocklist"
        return None

    def passage_reason(self, passage: str) -> str | None:
        c = self.c
        if len(passage) < c.passage_min_chars:
            return "passage_too_short"
        if len(passage) > c.passage_max_chars:
            return "passage_too_long"
        if cjk_ratio(passage) < c.min_cjk_ratio:
            return "low_cjk_ratio"
        if dup_line_ratio(passage) > c.max_dup_line_ratio:
            return "repetitive_lines"
        if dup_ngram_ratio(passage, c.repetition_ngram) > c.max_dup_ngram_ratio:
            return "repetitive_ngrams"
        if self._block is not None:
            hits = set(self._block.findall(normalize_for_match(passage)))
            if len(hits) >= c.blocklist_min_passage_hits:
                return "blocklist"
        return None

    def pair_reason(self, title: str, passage: str) -> str | None:
        if self.c.title_in_passage_head:
            t = normalize_for_match(title)
            head = normalize_for_match(passage[: self.c.passage_head_chars + len(title)])
            if t and (t == normalize_for_match(passage) or t in head):
                return "title_in_passage_head"
        return None
