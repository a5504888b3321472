"""Options of the score stage."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from cmtp.schemas.ranges import check_ranges, within

DEFAULT_SCORER = "shibing624/text2vec-base-chinese"  # C-MTP's scorer; builtin:me5-small works offline
DEFAULT_THRESHOLD = 0.43  # C-MTP's cut for Text2Vec-Chinese


@dataclass
class ScoreConfig:
    model: str = DEFAULT_SCORER
    threshold: float = field(default=DEFAULT_THRESHOLD, metadata=within(ge=-1, le=1, why="scores are cosines"))
    batch_size: int = field(default=64, metadata=within(ge=1))  # sentences per forward pass
    # pairs per RunInference call: sorted by length inside, then cut into batches
    inference_batch: int = field(default=1024, metadata=within(ge=1))
    max_seq_length: int | None = field(default=256, metadata=within(ge=2))
    query_prompt: str | None = None  # default: the model's "query" prompt, if it has one
    passage_prompt: str | None = None  # default: the model's "passage" / "document" prompt, if it has one
    device: str | None = None  # default: cuda when available, else cpu
    engine: str = "torch"  # or on CPU: onnx | onnx-int8 (embedding.engines, with their measured agreement)
    fp16: bool = True  # on cuda only
    share_model: bool = True  # one model per machine, shared by the worker processes
    allow_network: bool = False

    def __post_init__(self):
        from cmtp.transforms.embedding.engines import check_engine

        check_ranges(self)
        check_engine(self.engine)

    def to_dict(self) -> dict:
        return asdict(self)
