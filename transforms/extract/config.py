"""Options of the extract stage, with the defaults a C-MTP style corpus wants. Every step can be turned off."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from cmtp.schemas.ranges import check_ranges, within


@dataclass
class ExtractConfig:
    # normalisation
    nfkc: bool = True  # NFKC also maps full-width ASCII to half-width
    strip_html: bool = True
    strip_markdown: bool = True  # emphasis, heading, list and quote markers, links -> their text
    strip_urls: bool = True
    strip_emails: bool = True
    t2s: bool = True  # traditional -> simplified (OpenCC t2s)
    # literal "\n", "\t" sequences (text JSON-encoded twice) -> whitespace; off for corpora about code
    unescape_whitespace: bool = True
    collapse_repeated_passage: bool = True  # "X X" (a body pasted twice) -> "X"
    # length bounds, in characters after cleaning
    title_min_chars: int = field(default=4, metadata=within(ge=0))
    title_max_chars: int = field(default=128, metadata=within(ge=1))
    drop_placeholder_titles: bool = True  # ids and placeholders ("reserved-43243x1F", "untitled") are no titles
    passage_min_chars: int = field(default=20, metadata=within(ge=0))
    passage_max_chars: int = field(default=8192, metadata=within(ge=1))
    # quality filters
    # share of CJK characters among non-space characters of the passage
    min_cjk_ratio: float = field(default=0.3, metadata=within(ge=0, le=1))
    # share of characters in lines that occur more than once
    max_dup_line_ratio: float = field(default=0.3, metadata=within(ge=0, le=1))
    # long enough that a technical term used three times is not repetition
    repetition_ngram: int = field(default=20, metadata=within(ge=1))
    # share of characters covered by repeated character n-grams
    max_dup_ngram_ratio: float = field(default=0.25, metadata=within(ge=0, le=1))
    blocklist: bool = True
    extra_blocklists: list[str] = field(default_factory=list)
    # distinct terms in the passage (one in the title is enough)
    blocklist_min_passage_hits: int = field(default=2, metadata=within(ge=1))
    title_in_passage_head: bool = True
    # the title may start this far in ("原标题:", "导语:")
    passage_head_chars: int = field(default=16, metadata=within(ge=0))
    # parallelism: files are read whole by one worker each; rebalance reshuffles the documents so cleaning
    # spreads over all workers when a few huge files hold most records (costs one extra shuffle)
    rebalance: bool = False
    # exact dedup
    dedup_pair: bool = True  # same normalised (title, passage)
    dedup_passage: bool = True  # same normalised passage

    def __post_init__(self):
        from cmtp.schemas.errors import CmtpError

        check_ranges(self)
        if self.title_min_chars > self.title_max_chars or self.passage_min_chars > self.passage_max_chars:
            raise CmtpError("a minimum length is above its maximum (title_min_chars/title_max_chars, "
                            "passage_min_chars/passage_max_chars)")

    def to_dict(self) -> dict:
        return asdict(self)
