"""Options of the score stage."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cmtp.schemas.ranges import check_ranges, option
from cmtp.transforms.embedding.engines import ENGINE_HELP, ENGINES

DEFAULT_SCORER = "shibing624/text2vec-base-chinese"  # C-MTP's scorer; builtin:me5-small works offline
DEFAULT_THRESHOLD = 0.43  # C-MTP's cut for Text2Vec-Chinese


@dataclass
class ScoreConfig:
    model: str = option(DEFAULT_SCORER, "scoring model: builtin:NAME, a local folder, or a hub id in the local cache")
    threshold: float = option(DEFAULT_THRESHOLD, "keep pairs with score >= this", ge=-1, le=1,
                              why="scores are cosines")
    batch_size: int = option(64, "sentences per forward pass", ge=1)
    inference_batch: int = option(1024, "pairs per RunInference call (sorted by length, then cut into batches)",
                                  ge=1)
    max_seq_length: int | None = option(256, "tokens per text", ge=2)
    query_prompt: str | None = option(None, "prefix for titles (default: the model's query prompt)")
    passage_prompt: str | None = option(None, "prefix for passages (default: the model's passage prompt)")
    device: str | None = option(None, "cpu, cuda, cuda:1 ... (default: cuda when present)")
    engine: str = option("torch", ENGINE_HELP, choices=ENGINES)
    fp16: bool = option(True, "half precision on cuda (never on cpu)")
    share_model: bool = option(True, "one model per machine, shared by its worker processes")
    allow_network: bool = option(False, "may fetch a hub model", flag="--allow-network/--offline")

    def __post_init__(self):
        check_ranges(self)

    def to_dict(self) -> dict:
        return asdict(self)
