"""Training configuration: flags or a YAML file, with per-stage defaults (BGE stages 2 and 3)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from cmtp.schemas.errors import CmtpError
from cmtp.schemas.ranges import check_ranges, option

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

# what a resumed run may change: how long it runs, how often it saves, logs and evaluates, where it runs (its data
# readers are checked apart, checkpoints.check_readers); every other option must be the checkpoint's
RESUME_MAY_CHANGE = frozenset({"output_dir", "max_steps", "epochs", "save_steps", "save_total_limit", "logging_steps",
                               "workers", "resume",
                               "allow_network", "device", "gradient_checkpointing", "eval", "eval_steps",
                               "eval_max_per_task", "eval_batch_size", "keep_best", "saturation_steps"})


@dataclass
class TrainConfig:
    stage: str = option("contrastive", "retromae (stage 1), contrastive (stage 2) or finetune (stage 3)",
                        choices=TRAINING_STAGES)
    model: str = option("builtin:me5-small", "model to start from")
    data: list[DataSource] = field(default_factory=list)  # the CLI's --data PATH | NAME=PATH | NAME=PATH@WEIGHT
    output_dir: str = "out/train"  # the CLI's --out
    max_steps: int = option(1000, "optimiser steps", ge=1)
    epochs: float | None = option(None, "passes over the data; steps from the Parquet row counts (instead of "
                                        "--max-steps)", gt=0)
    batch_size: int = option(32, "queries per device per step", ge=1)
    learning_rate: float | None = option(None, "peak learning rate (default 5e-6; retromae 2e-5)", gt=0,
                                         aliases=("--lr",))
    weight_decay: float = option(0.01, "AdamW weight decay", ge=0)
    warmup_ratio: float = option(0.1, "share of steps warming the learning rate up", ge=0, lt=1)
    temperature: float | None = option(None, "InfoNCE temperature (default 0.01; retromae 0.02)", gt=0)
    train_group_size: int | None = option(None, "passages per query: 1 positive + hard negatives (default 1; "
                                                "finetune 8)", aliases=("--group-size",), ge=1)
    cross_device: bool | None = option(None, "gather all devices' passages as negatives (default on; retromae off)")
    gradcache_chunk: int = option(0, "gradient caching with chunks of this many texts (0: off)", ge=0)
    query_max_len: int = option(64, "tokens per query", ge=2)
    passage_max_len: int = option(256, "tokens per passage", ge=2)
    pooling: str | None = option(None, "pooling (default: the model's)", choices=("cls", "mean"))
    query_prompt: str | None = option(None, "query prefix when examples carry no instruction (default: the model's)")
    passage_prompt: str | None = option(None, "passage prefix (default: the model's)")
    heads: str = option("dense", "BGE-M3 heads to train: dense, or dense,sparse,multivector (lexical weights and "
                                 "token vectors, saved beside the model as sparse_linear.pt / colbert_linear.pt)")
    head_weights: str = option("1,0.3,1", "BGE-M3: weights of the dense, sparse and multi-vector scores in the "
                                          "ensemble score and the loss")
    head_learning_rate: float | None = option(None, "BGE-M3: peak learning rate of the sparse and multi-vector heads "
                                                    "(default: --learning-rate)", gt=0)
    self_distill: bool = option(True, "BGE-M3: the ensemble score is each head's soft target (self-knowledge "
                                      "distillation)", flag="--self-distill/--no-self-distill")
    distill_weight: float = option(0.0, "weight of the KL loss to the teacher's pos/neg scores (0: off)", ge=0)
    distill_temperature: float = option(0.02, "temperature of the teacher's scores", gt=0)
    precision: str = option("auto", "half precisions apply on GPU", choices=("auto", "fp32", "bf16", "fp16"))
    gradient_checkpointing: bool = option(False, "trade compute for memory")
    freeze_embeddings: bool = option(False, "keep the token-embedding table fixed (most parameters of a "
                                            "multilingual model)")
    max_grad_norm: float = option(1.0, "gradient clipping norm", gt=0)
    save_steps: int = option(500, "checkpoint every N steps (0: no checkpoints, only the model)", ge=0)
    save_total_limit: int = option(2, "checkpoints kept: the newest N, older ones deleted (0: keep all)", ge=0)
    logging_steps: int = option(10, "TensorBoard scalars every N steps", ge=1)
    seed: int = option(42, "seed")
    workers: int = option(0, "dataloader worker processes per device", ge=0)
    shuffle_units: int = option(4, "row groups a reader concatenates and shuffles together (a block shuffle)",
                                ge=1)
    group_by_length: bool = option(False, "batches of examples of about the same length: the rows of 16 batches are "
                                          "ordered by their longest passage, cut into batches and served in a "
                                          "seeded order (less padding)")
    same_source_batches: bool = option(True, "each global batch from one --data source",
                                       flag="--same-source-batches/--mixed-source-batches")
    resume: bool = option(True, "continue from the newest checkpoint in --out")
    allow_network: bool = option(False, "may fetch a hub model", flag="--allow-network/--offline")
    device: str | None = option(None, "cpu, cuda, cuda:1 ... (default: cuda when present)")
    # stage 1, RetroMAE (trainer/retromae/)
    encoder_mask_ratio: float = option(0.3, "retromae: share of words masked for the encoder", gt=0, lt=1)
    decoder_mask_ratio: float = option(0.5, "retromae: share of context hidden from each decoder position", ge=0,
                                       lt=1)
    whole_word_masking: bool = option(True, "retromae: mask jieba words whole, or single tokens",
                                      flag="--whole-word-masking/--per-token-masking")
    # evaluation during training (trainer/training_eval.py)
    eval: list[str] = option(help="evaluate on these tasks (folder, tasks YAML, or suite:dev) at the start, every "
                                  "--eval-steps and at the end", factory=list)
    eval_holdout: float = option(0.0, "keep this share of the training rows out of training and evaluate "
                                      "retrieval on it", ge=0, lt=0.5)
    eval_steps: int = option(0, "also evaluate every N steps (0: at the start and the end only)", ge=0)
    eval_max_per_task: int | None = option(500, "seeded subsample per evaluation task", ge=1)
    eval_batch_size: int = option(64, "texts per forward pass when evaluating", ge=1)
    keep_best: bool = option(False, "save the best evaluated model to OUT/best_model")
    saturation_steps: int = option(20, "warn when in-batch accuracy has been 1.0 for this many steps in a row",
                                   ge=1)

    def __post_init__(self):
        check_ranges(self)
        if self.stage == "retromae" and self.gradcache_chunk:
            raise CmtpError("gradient caching applies to the contrastive stages, not to retromae")
        from .m3 import parse_heads, parse_weights

        self.heads = ",".join(parse_heads(self.heads))
        parse_weights(self.head_weights)
        if self.stage == "retromae" and self.heads != "dense":
            raise CmtpError("--heads applies to the contrastive stages; retromae pretrains the encoder only")
        for key, value in STAGE_DEFAULTS[self.stage].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        self.data = [d if isinstance(d, DataSource) else DataSource(**d) for d in self.data]
        if not self.data:
            raise CmtpError("no training data: give --data PATH (or data: in the config file)")
        names = [d.name for d in self.data]  # the stream keeps each dataset's files and position by name
        if repeated := sorted({n for n in names if names.count(n) > 1}):
            raise CmtpError(f"two datasets are named {', '.join(repeated)}: give them distinct names (NAME=PATH)")
        if self.keep_best and not (self.eval or self.eval_holdout):
            raise CmtpError("keep_best needs an evaluation: give --eval TASKS or --eval-holdout SHARE")

    @property
    def m3_heads(self) -> tuple[str, ...]:
        """The heads trained, when more than dense (a BGE-M3 run); () for a dense model."""
        heads = tuple(self.heads.split(","))
        return heads if heads != ("dense",) else ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
