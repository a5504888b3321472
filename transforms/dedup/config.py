"""Options of the dedup stage."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cmtp.schemas.ranges import check_ranges, option

FIELDS = ("passage", "title_passage", "title")
POLICIES = ("longest", "lowest_id")


@dataclass
class DedupConfig:
    field: str = option("passage", "what is compared", choices=FIELDS)
    shingle: str = option("char", "shingles: char n-grams, or jieba word n-grams", choices=("char", "word"))
    ngram: int = option(5, "n of the shingles (characters, or words with --shingle word)", ge=1)
    num_perm: int = option(128, "MinHash permutations", ge=2)
    seed: int = option(1, "MinHash seed")
    threshold: float = option(0.8, "Jaccard threshold of a near duplicate", gt=0, le=1, why="a Jaccard similarity")
    bands: int | None = option(None, "LSH bands, with --rows (default: datasketch's optimum for the threshold)", ge=1)
    rows: int | None = option(None, "LSH rows per band, with --bands", ge=1)
    # weights of false positives and negatives in that optimum; default (0.05, 0.95) with verify (false
    # positives are removed by the exact check, so only misses cost), (0.5, 0.5) without
    fp_weight: float | None = option(None, "weight of false positives in the LSH optimum (default 0.05 with "
                                     "--verify, else 0.5)", ge=0)
    fn_weight: float | None = option(None, "weight of misses in the LSH optimum (default 0.95 with --verify, else "
                                     "0.5)", ge=0)
    verify: bool = option(True, "exact Jaccard check of candidate pairs (removes LSH false positives)")
    max_bucket_all_pairs: int = option(32, "LSH buckets up to this size give all pairs; larger ones a star + chain",
                                       ge=2)
    policy: str = option("longest", "representative: longest passage (lowest id breaks ties) or lowest id",
                         choices=POLICIES)
    cc_rounds: int = option(8, "connected-components rounds per pass (more passes run until converged)", ge=1)

    def __post_init__(self):
        from cmtp.schemas.errors import CmtpError

        check_ranges(self)
        if (self.bands is None) != (self.rows is None):
            raise CmtpError("give both bands and rows, or neither")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise CmtpError(f"bands x rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")

    def lsh_params(self) -> tuple[int, int]:
        if self.bands is not None:
            return self.bands, self.rows
        from .lsh import optimal_bands_rows

        return optimal_bands_rows(self.threshold, self.num_perm, *self.lsh_weights())

    def lsh_weights(self) -> tuple[float, float]:
        default = (0.05, 0.95) if self.verify else (0.5, 0.5)
        fp = default[0] if self.fp_weight is None else self.fp_weight
        fn = default[1] if self.fn_weight is None else self.fn_weight
        return fp, fn

    def to_dict(self) -> dict:
        return asdict(self)
