"""Training configuration: flags or a YAML file, with per-stage defaults (BGE stages 2 and 3)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from cmtp.schemas.errors import CmtpError
from cmtp.schemas.ranges import check_ranges, within

from .data.stream import DataSource  # one dataset of the mix: name, paths, weight

TRAINING_STAGES = ("contrastive", "finetune", "retromae")
# Measured with benchmarks/quality.py (me5-small, 20 steps of batch 32 on the shared sample, eval-dev sets): stage 2
# at lr 2e-5 / temperature 0.02 cost STS-B -1.36, OCNLI -0.67, CMRC2018 nDCG@10 -0.68, reranking MAP -0.96; at
# lr 5e-6 / temperature 0.01 (e5's own) the same run is neutral (STS-B -0.01, CMRC2018 +0.12). Starting from a
# strong model, a low rate keeps what it knows; a from-scratch run wants higher rates (pass --lr).
STAGE_DEFAULTS = {
    # stage 2: title-passage pairs, in-batch + cross-device negatives, large batches
    "contrastive": {"temperature": 0.01, "train_group_size": 1, "cross_device": True, "learning_rate": 5e-6},
    # stage 3: instructions + mined hard negatives
    "finetune": {"temperature": 0.01, "train_group_size": 8, "cross_device": True, "learning_rate": 5e-6},
    # stage 1: RetroMAE on plain passages (continued pretraining of an already trained encoder: a low rate)
    "retromae": {"temperature": 0.02, "train_group_size": 1, "cross_device": False, "learning_rate": 2e-5},
}


@dataclass
class TrainConfig:
    stage: str = "contrastive"
    model: str = "builtin:me5-small"
    data: list[DataSource] = field(default_factory=list)
    output_dir: str = "out/train"
    max_steps: int = field(default=1000, metadata=within(ge=1))
    epochs: float | None = None  # when set: the steps that cover the data this many times (replaces max_steps)
    batch_size: int = field(default=32, metadata=within(ge=1))  # queries per rank per step
    learning_rate: float | None = field(default=None, metadata=within(gt=0))
    weight_decay: float = field(default=0.01, metadata=within(ge=0))
    warmup_ratio: float = field(default=0.1, metadata=within(ge=0, lt=1))
    temperature: float | None = field(default=None, metadata=within(gt=0))
    train_group_size: int | None = None  # passages per query: 1 positive + (n - 1) hard negatives
    cross_device: bool | None = None
    # > 0: gradient caching with chunks of this many texts
    gradcache_chunk: int = field(default=0, metadata=within(ge=0))
    query_max_len: int = field(default=64, metadata=within(ge=2))
    passage_max_len: int = field(default=256, metadata=within(ge=2))
    pooling: str | None = None  # cls | mean (default: the model's)
    query_prompt: str | None = None  # default: the example's instruction, else the model's query prompt
    passage_prompt: str | None = None  # default: the model's passage prompt
    distill_weight: float = field(default=0.0, metadata=within(ge=0))  # > 0: KL to softmax(pos_scores + neg_scores)
    distill_temperature: float = field(default=0.02, metadata=within(gt=0))
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (half precisions on GPU)
    gradient_checkpointing: bool = False
    freeze_embeddings: bool = False  # keep the token-embedding table fixed (most parameters of a multilingual model)
    max_grad_norm: float = field(default=1.0, metadata=within(gt=0))
    save_steps: int = 500  # 0: no checkpoints (only the final model)
    logging_steps: int = 10
    seed: int = 42
    workers: int = field(default=0, metadata=within(ge=0))  # dataloader worker processes per rank
    shuffle_units: int = 4
    same_source_batches: bool = True
    resume: bool = True  # continue from the newest checkpoint in output_dir
    allow_network: bool = False
    device: str | None = None
    # stage 1, RetroMAE (trainer/retromae/)
    encoder_mask_ratio: float = 0.3
    decoder_mask_ratio: float = 0.5
    whole_word_masking: bool = True  # jieba words; False: each token on its own
    # evaluation during training (trainer/training_eval.py)
    eval: list[str] = field(default_factory=list)  # task folders / tasks YAML / suite:dev
    eval_holdout: float = 0.0  # share of the training rows kept out of training and evaluated as retrieval
    eval_steps: int = 0  # also evaluate every N steps (0: at the start and the end only)
    eval_max_per_task: int | None = 500  # seeded subsample per task, so an evaluation costs minutes at most
    eval_batch_size: int = field(default=64, metadata=within(ge=1))
    keep_best: bool = False  # save the best evaluated model to OUT/best_model
    saturation_steps: int = 20  # warn when in-batch accuracy has been 1.0 for this many steps in a row

    def __post_init__(self):
        check_ranges(self)
        if self.stage not in TRAINING_STAGES:
            raise CmtpError(f"stage must be one of {', '.join(TRAINING_STAGES)}")
        if self.stage == "retromae" and self.gradcache_chunk:
            raise CmtpError("gradient caching applies to the contrastive stages, not to retromae")
        if not (0 < self.encoder_mask_ratio < 1 and 0 <= self.decoder_mask_ratio < 1):
            raise CmtpError("encoder_mask_ratio must be in (0, 1) and decoder_mask_ratio in [0, 1)")
        for key, value in STAGE_DEFAULTS[self.stage].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        self.data = [d if isinstance(d, DataSource) else DataSource(**d) for d in self.data]
        if not self.data:
            raise CmtpError("no training data: give --data PATH (or data: in the config file)")
        if self.epochs is not None and self.epochs <= 0:
            raise CmtpError("epochs must be > 0")
        if self.save_steps < 0 or self.logging_steps < 1 or self.max_steps < 1:
            raise CmtpError("max_steps and logging_steps must be >= 1, save_steps >= 0")
        if not 0 <= self.eval_holdout < 0.5:
            raise CmtpError("eval_holdout must be in [0, 0.5)")
        if self.keep_best and not (self.eval or self.eval_holdout):
            raise CmtpError("keep_best needs an evaluation: give --eval TASKS or --eval-holdout SHARE")
        if self.eval_steps < 0:
            raise CmtpError("eval_steps must be >= 0")
        if self.train_group_size < 1 or self.batch_size < 1:
            raise CmtpError("batch_size and train_group_size must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise CmtpError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**values)
