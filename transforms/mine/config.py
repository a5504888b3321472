"""Options of the mine stage."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from cmtp.schemas.ranges import check_ranges, within


@dataclass
class MineConfig:
    model: str | None = None  # default: the scorer named in the input's manifest, else builtin:me5-small
    query_instruction: str | None = None  # prefix for queries when embedding (default: the model's query prompt)
    passage_prompt: str | None = None  # prefix for passages (default: the model's passage prompt)
    train_instruction: str | None = None  # stored with each example for training (BGE: the retrieval instruction)
    task: str = "retrieval"
    range_start: int = field(default=10, metadata=within(ge=0))  # sample negatives from ranks [range_start, range_end)
    range_end: int = field(default=210, metadata=within(ge=1))
    negatives: int = field(default=15, metadata=within(ge=0))
    seed: int = 42
    # drop likely false negatives: above this share of the positive's score, both measured above the pool's
    # random-pair median (sampling.false_negative_ceiling)
    max_neg_ratio: float = field(default=0.95, metadata=within(gt=0))
    # drop candidates this similar (character 5-gram Jaccard) to a positive
    near_dup_jaccard: float = field(default=0.8, metadata=within(gt=0, le=1))
    pad_random: bool = False  # fill short rows with random pool passages, marked "random"
    keep_labeled_negatives: bool = True
    batch_size: int = field(default=64, metadata=within(ge=1))
    max_seq_length: int | None = field(default=256, metadata=within(ge=2))
    # pool passages per embedding block: one Beam work item, one disk shard
    embed_shard_rows: int = field(default=4096, metadata=within(ge=1))
    flat_max: int = field(default=200_000, metadata=within(ge=0))  # exact IndexFlatIP up to this pool size, IVF above
    ivf_pq: bool = False  # IVF-PQ instead of IVF-Flat: dim/4 bytes per passage in RAM, re-ranked exactly from disk
    pq_bytes: int | None = field(default=None, metadata=within(ge=1))  # PQ code size per passage (default dim // 4)
    # with ivf_pq: candidates fetched per wanted neighbour, then ordered by exact scores
    rerank: int = field(default=8, metadata=within(ge=1))
    # default: tuned on a sample until recall@k >= target_recall
    nprobe: int | None = field(default=None, metadata=within(ge=1))
    target_recall: float = field(default=0.99, metadata=within(gt=0, le=1))
    search_batch: int = field(default=4096, metadata=within(ge=1))  # queries per embedding block and per search call
    # query partitions searched in parallel by Beam workers (1: in this process)
    search_partitions: int = field(default=1, metadata=within(ge=1))
    # local Beam worker processes for embedding and search (they split the cores)
    workers: int = field(default=1, metadata=within(ge=1))
    share_model: bool = False  # one model per machine for all workers (right for one GPU; CPU workers need their own)
    use_gpu: bool | None = None  # default: when faiss sees a GPU
    device: str | None = None
    engine: str = "torch"  # or on CPU: onnx | onnx-int8 (embedding.engines, with their measured agreement)
    allow_network: bool = False
    rows_per_group: int = field(default=8192, metadata=within(ge=1))  # Parquet row-group size of the output
    num_shards: int = field(default=1, metadata=within(ge=1))
    labeled: list[str] = field(default_factory=list)  # JSON lines / Parquet with query, pos, neg
    pool: str | None = None  # separate candidate pool (Parquet with passage or text, or JSON lines)

    def __post_init__(self):
        from cmtp.schemas.errors import CmtpError
        from cmtp.transforms.embedding.engines import check_engine

        check_ranges(self)
        check_engine(self.engine)
        if self.range_end <= self.range_start:
            raise CmtpError("--range must be START-END with 0 <= START < END")

    def to_dict(self) -> dict:
        return asdict(self)
