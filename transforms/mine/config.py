"""Options of the mine stage: what it mines (``MineConfig``) and how it runs (``MineRunOptions``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from cmtp.schemas.ranges import check_ranges, option, within
from cmtp.transforms.embedding.engines import ENGINE_HELP, ENGINES


@dataclass
class MineConfig:
    model: str | None = option(None, "embedding model (default: the scorer named in INPUT's manifest, else "
                                     "builtin:me5-small)")
    query_instruction: str | None = option(None, "query prefix when embedding (default: the model's query prompt)")
    passage_prompt: str | None = option(None, "passage prefix when embedding (default: the model's passage prompt)")
    train_instruction: str | None = option(None, "instruction stored with each example for training (BGE: the "
                                                 "retrieval instruction)")
    task: str = option("retrieval", "task name stored with each example")
    range_start: int = field(default=10, metadata=within(ge=0))  # negatives from ranks [range_start, range_end)
    range_end: int = field(default=210, metadata=within(ge=1))  # (the CLI's --range START-END)
    negatives: int = option(15, "negatives per query", ge=0)
    seed: int = option(42, "sampling seed")
    max_neg_ratio: float = option(0.95, "drop likely false negatives: candidates above this share of the positive's "
                                        "score, both measured above the pool's random-pair median", gt=0)
    near_dup_jaccard: float = option(0.8, "drop candidates this similar to a positive (character 5-gram Jaccard)",
                                     gt=0, le=1)
    pad_random: bool = option(False, "fill short rows with random pool passages, marked random")
    keep_labeled_negatives: bool = option(True, "keep a labeled file's own negatives first")
    batch_size: int = option(64, "sentences per forward pass", ge=1)
    max_seq_length: int | None = option(256, "tokens per text", ge=2)
    embed_shard_rows: int = option(4096, "pool passages per embedding block (one Beam work item, one disk shard)",
                                   ge=1)
    flat_max: int = option(200_000, "exact search (IndexFlatIP) up to this pool size, IVF above", ge=0)
    ivf_pq: bool = option(False, "IVF-PQ instead of IVF-Flat: dim/4 bytes per passage in RAM, candidates re-ranked "
                                 "exactly from the disk shards")
    pq_bytes: int | None = option(None, "with --ivf-pq: code bytes per passage (default: dimensions / 4)", ge=1)
    rerank: int = option(8, "with --ivf-pq: candidates fetched per neighbour before the exact re-rank", ge=1)
    nprobe: int | None = option(None, "IVF probes (default: tuned to --target-recall on sampled queries)", ge=1)
    target_recall: float = option(0.99, "recall@k of exact search the tuned nprobe must reach", gt=0, le=1)
    search_batch: int = option(4096, "queries per embedding block and per search call", ge=1)
    share_model: bool = option(False, "one model per machine for all workers (right for one GPU; CPU workers need "
                                      "their own)")
    use_gpu: bool | None = option(None, "faiss on the GPU (default: when faiss sees one)")
    device: str | None = option(None, "cpu, cuda, cuda:1 ... (default: cuda when present)")
    engine: str = option("torch", ENGINE_HELP, choices=ENGINES)
    allow_network: bool = option(False, "may fetch a hub model", flag="--allow-network/--offline")
    labeled: list[str] = option(help="labeled query/pos/neg file(s) or globs: JSON lines or Parquet", factory=list)
    pool: str | None = option(None, "separate candidate pool (Parquet with passage or text, or JSON lines)")

    def __post_init__(self):
        from cmtp.schemas.errors import CmtpError

        check_ranges(self)
        if self.range_end <= self.range_start:
            raise CmtpError("--range must be START-END with 0 <= START < END")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MineRunOptions:
    """How mine runs and cuts its output: runner options, kept out of ``MineConfig`` as every stage keeps its
    worker count and shard sizes out of its config. Worker and partition counts never change the output."""

    search_partitions: int = option(1, "query partitions searched in parallel by Beam workers (1: in this "
                                       "process)", ge=1)
    workers: int = option(1, "local Beam worker processes for embedding and search (they split the cores)", ge=1)
    row_group_size: int = option(8192, "Parquet row-group size of the output (the trainer streams row groups)",
                                 aliases=("--rows-per-group",), ge=1)
    num_shards: int = option(1, "output shards", ge=1)

    def __post_init__(self):
        check_ranges(self)


RUN_OPTIONS = tuple(f.name for f in fields(MineRunOptions))
