"""Options of the extract stage, with the defaults a C-MTP style corpus wants. Every step can be turned off."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cmtp.schemas.ranges import check_ranges, option


@dataclass
class ExtractConfig:
    # normalisation
    nfkc: bool = option(True, "NFKC normalisation (also full-width ASCII to half-width)")
    strip_html: bool = option(True, "remove HTML tags and entities")
    strip_markdown: bool = option(True, "emphasis, heading, list and quote markers, links -> their text")
    strip_urls: bool = option(True, "remove URLs")
    strip_emails: bool = option(True, "remove e-mail addresses")
    t2s: bool = option(True, "traditional -> simplified (OpenCC t2s)")
    unescape_whitespace: bool = option(True, "literal \\n, \\t (text JSON-encoded twice) -> whitespace; off for "
                                             "corpora about code")
    collapse_repeated_passage: bool = option(True, '"X X" (a body pasted twice) -> "X"')
    # length bounds, in characters after cleaning
    title_min_chars: int = option(4, "drop titles shorter than this", ge=0)
    title_max_chars: int = option(128, "drop titles longer than this", ge=1)
    drop_placeholder_titles: bool = option(True, 'ids and placeholders ("reserved-43243x1F", "untitled") are no '
                                                 "titles")
    passage_min_chars: int = option(20, "drop passages shorter than this", ge=0)
    passage_max_chars: int = option(8192, "drop passages longer than this", ge=1)
    # quality filters
    min_cjk_ratio: float = option(0.3, "minimum share of Chinese characters among the passage's non-space ones",
                                  ge=0, le=1)
    max_dup_line_ratio: float = option(0.3, "maximum share of characters in lines that occur more than once",
                                       ge=0, le=1)
    repetition_ngram: int = option(20, "n of the repeated-n-gram filter (long enough that a term used three times "
                                       "is not repetition)", ge=1)
    max_dup_ngram_ratio: float = option(0.25, "maximum share of characters covered by repeated n-grams", ge=0, le=1)
    blocklist: bool = True  # the bundled blocklist (YAML only: --blocklist adds files)
    extra_blocklists: list[str] = option(help="extra blocklist file(s), one term per line", factory=list,
                                         flag="--blocklist")
    blocklist_min_passage_hits: int = option(2, "distinct blocklist terms that drop a passage (one in the title is "
                                                "enough)", ge=1)
    title_in_passage_head: bool = option(True, "drop a pair whose passage starts with its title (a trivial pair)")
    passage_head_chars: int = option(16, "the title may start this far in (原标题:, 导语:)", ge=0)
    # parallelism: files are read whole by one worker each; rebalance reshuffles the documents so cleaning
    # spreads over all workers when a few huge files hold most records (costs one extra shuffle)
    rebalance: bool = option(False, "reshuffle records after reading (few huge input files)")
    # exact dedup
    dedup_pair: bool = option(True, "exact dedup of the same normalised (title, passage)")
    dedup_passage: bool = option(True, "exact dedup of the same normalised passage")

    def __post_init__(self):
        from cmtp.schemas.errors import CmtpError

        check_ranges(self)
        if self.title_min_chars > self.title_max_chars or self.passage_min_chars > self.passage_max_chars:
            raise CmtpError("a minimum length is above its maximum (title_min_chars/title_max_chars, "
                            "passage_min_chars/passage_max_chars)")

    def to_dict(self) -> dict:
        return asdict(self)
