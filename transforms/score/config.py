"""Options of the score stage."""

from __future__ import annotations

from dataclasses import asdict, dataclass

DEFAULT_SCORER = "shibing624/text2vec-base-chinese"  # C-MTP's scorer; builtin:me5-small works offline
DEFAULT_THRESHOLD = 0.43  # C-MTP's cut for Text2Vec-Chinese


@dataclass
class ScoreConfig:
    model: str = DEFAULT_SCORER
    threshold: float = DEFAULT_THRESHOLD
    batch_size: int = 64  # sentences per forward pass
    inference_batch: int = 1024  # pairs per RunInference call: sorted by length inside, then cut into batches
    max_seq_length: int | None = 256
    query_prompt: str | None = None  # default: the model's "query" prompt, if it has one
    passage_prompt: str | None = None  # default: the model's "passage" / "document" prompt, if it has one
    device: str | None = None  # default: cuda when available, else cpu
    fp16: bool = True  # on cuda only
    share_model: bool = True  # one model per machine, shared by the worker processes
    allow_network: bool = False

    def to_dict(self) -> dict:
        return asdict(self)
