"""Options of the mine stage."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class MineConfig:
    model: str | None = None  # default: the scorer named in the input's manifest, else builtin:me5-small
    query_instruction: str | None = None  # prefix for queries when embedding (default: the model's query prompt)
    passage_prompt: str | None = None  # prefix for passages (default: the model's passage prompt)
    train_instruction: str | None = None  # stored with each example for training (BGE: the retrieval instruction)
    task: str = "retrieval"
    range_start: int = 10  # sample negatives from ranks [range_start, range_end)
    range_end: int = 210
    negatives: int = 15
    seed: int = 42
    # drop likely false negatives: above this share of the positive's score, both measured above the pool's
    # random-pair median (sampling.false_negative_ceiling)
    max_neg_ratio: float = 0.95
    near_dup_jaccard: float = 0.8  # drop candidates this similar (character 5-gram Jaccard) to a positive
    pad_random: bool = False  # fill short rows with random pool passages, marked "random"
    keep_labeled_negatives: bool = True
    batch_size: int = 64
    max_seq_length: int | None = 256
    embed_shard_rows: int = 4096  # pool passages per embedding block: one Beam work item, one disk shard
    flat_max: int = 200_000  # exact IndexFlatIP up to this pool size, IVF above
    ivf_pq: bool = False  # IVF-PQ instead of IVF-Flat: dim/4 bytes per passage in RAM, re-ranked exactly from disk
    pq_bytes: int | None = None  # PQ code size per passage (default dim // 4)
    rerank: int = 8  # with ivf_pq: candidates fetched per wanted neighbour, then ordered by exact scores
    nprobe: int | None = None  # default: tuned on a sample until recall@k >= target_recall
    target_recall: float = 0.99
    search_batch: int = 4096  # queries per embedding block and per search call
    search_partitions: int = 1  # query partitions searched in parallel by Beam workers (1: in this process)
    workers: int = 1  # local Beam worker processes for embedding and search (they split the cores)
    share_model: bool = False  # one model per machine for all workers (right for one GPU; CPU workers need their own)
    use_gpu: bool | None = None  # default: when faiss sees a GPU
    device: str | None = None
    allow_network: bool = False
    rows_per_group: int = 8192  # Parquet row-group size of the output
    num_shards: int = 1
    labeled: list[str] = field(default_factory=list)  # JSON lines / Parquet with query, pos, neg
    pool: str | None = None  # separate candidate pool (Parquet with passage or text, or JSON lines)

    def __post_init__(self):
        from cmtp.schemas.errors import CmtpError

        if self.range_end <= self.range_start or self.range_start < 0:
            raise CmtpError("--range must be START-END with 0 <= START < END")
        if self.negatives < 0 or not 0 < self.target_recall <= 1 or self.batch_size < 1:
            raise CmtpError("negatives must be >= 0, target_recall in (0, 1], batch_size >= 1")
        if min(self.workers, self.search_partitions, self.embed_shard_rows, self.search_batch) < 1:
            raise CmtpError("workers, search_partitions, embed_shard_rows and search_batch must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)
