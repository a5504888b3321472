"""Options of the extract stage, with the defaults a C-MTP style corpus wants. Every step can be turned off."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class ExtractConfig:
    # normalisation
    nfkc: bool = True  # NFKC also maps full-width ASCII to half-width
    strip_html: bool = True
    strip_markdown: bool = True  # emphasis, heading, list and quote markers, links -> their text
    strip_urls: bool = True
    strip_emails: bool = True
    t2s: bool = True  # traditional -> simplified (OpenCC t2s)
    collapse_repeated_passage: bool = True  # "X X" (a body pasted twice) -> "X"
    # length bounds, in characters after cleaning
    title_min_chars: int = 4
    title_max_chars: int = 128
    drop_placeholder_titles: bool = True  # ids and placeholders ("reserved-43243x1F", "untitled") are no titles
    passage_min_chars: int = 20
    passage_max_chars: int = 8192
    # quality filters
    min_cjk_ratio: float = 0.3  # share of CJK characters among non-space characters of the passage
    max_dup_line_ratio: float = 0.3  # share of characters in lines that occur more than once
    repetition_ngram: int = 20  # long enough that a technical term used three times is not repetition
    max_dup_ngram_ratio: float = 0.25  # share of characters covered by repeated character n-grams
    blocklist: bool = True
    extra_blocklists: list[str] = field(default_factory=list)
    blocklist_min_passage_hits: int = 2  # distinct terms in the passage (one in the title is enough)
    title_in_passage_head: bool = True
    passage_head_chars: int = 16  # the title may start this far in ("原标题:", "导语:")
    # parallelism: files are read whole by one worker each; rebalance reshuffles the documents so cleaning
    # spreads over all workers when a few huge files hold most records (costs one extra shuffle)
    rebalance: bool = False
    # exact dedup
    dedup_pair: bool = True  # same normalised (title, passage)
    dedup_passage: bool = True  # same normalised passage

    def to_dict(self) -> dict:
        return asdict(self)
