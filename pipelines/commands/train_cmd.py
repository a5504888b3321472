"""``cmtp train``: RetroMAE (stage 1), contrastive (stage 2) or fine-tune (stage 3) training on streamed Parquet
shards."""

from __future__ import annotations

import typer

from cmtp.schemas.errors import CmtpError

from ..console import out
from .common import stage_options

HELP = """Train an embedding model on Parquet shards streamed from any fsspec path: plain texts (extract's pretrain/)
for stage 1 (retromae), pairs (score's kept/) for stage 2 (contrastive), training examples (mine's examples/)
for stage 3 (finetune).

--data is PATH, NAME=PATH or NAME=PATH@WEIGHT (repeat it to mix datasets by weight). On several GPUs:
torchrun --nproc_per_node=8 -m cmtp.pipelines train ... (same flags). A run resumes from its newest checkpoint.

Examples:

  cmtp train --stage retromae --data work/extract/pretrain --out work/stage1 --batch-size 64

  cmtp train --stage contrastive --data work/score/kept --out work/stage2 --batch-size 256 --gradcache-chunk 64

  cmtp train --stage finetune --model work/stage2/model --data qa=work/mine/examples --data nli=nli/@0.5
  --out work/stage3 --group-size 8

  cmtp train --config train.yaml
"""


def train(
    stage: str = typer.Option(None, help="retromae (stage 1), contrastive (stage 2) or finetune (stage 3)"),
    model: str = typer.Option(None, help="model to start from (default builtin:me5-small)"),
    data: list[str] = typer.Option(None, "--data", help="PATH | NAME=PATH | NAME=PATH@WEIGHT, repeatable"),
    out_dir: str = typer.Option(None, "--out", "-o", help="output directory (checkpoints, tensorboard, model)"),
    config_file: str = typer.Option(None, "--config", help="YAML file with any of these options"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a finished run in --out (a run that did "
                                   "not finish resumes from its checkpoints without it)"),
    max_steps: int = typer.Option(None, help="optimiser steps (default 1000)"),
    epochs: float = typer.Option(None, help="passes over the data; steps from the Parquet row counts (replaces "
                                           "--max-steps)"),
    batch_size: int = typer.Option(None, help="queries per device per step"),
    learning_rate: float = typer.Option(None, "--lr", help="peak learning rate"),
    temperature: float = typer.Option(None, help="InfoNCE temperature (default 0.01; retromae 0.02)"),
    group_size: int = typer.Option(None, help="passages per query: 1 positive + hard negatives"),
    cross_device: bool = typer.Option(None, "--cross-device/--no-cross-device", help="gather all devices' passages"),
    gradcache_chunk: int = typer.Option(None, help="gradient caching with chunks of this many texts (0: off)"),
    pooling: str = typer.Option(None, help="cls or mean (default: the model's)"),
    query_prompt: str = typer.Option(None, help="query prefix when examples carry no instruction"),
    passage_prompt: str = typer.Option(None, help="passage prefix (default: the model's)"),
    distill_weight: float = typer.Option(None, help="weight of the distillation loss on pos/neg scores"),
    precision: str = typer.Option(None, help="auto, fp32, bf16 or fp16 (half precisions on GPU)"),
    gradient_checkpointing: bool = typer.Option(None, "--gradient-checkpointing", help="trade compute for memory"),
    freeze_embeddings: bool = typer.Option(None, "--freeze-embeddings", help="keep the token embeddings fixed"),
    query_max_len: int = typer.Option(None, help="tokens per query (default 64)"),
    passage_max_len: int = typer.Option(None, help="tokens per passage (default 256)"),
    warmup_ratio: float = typer.Option(None, help="share of steps warming the learning rate up (default 0.1)"),
    weight_decay: float = typer.Option(None, help="AdamW weight decay (default 0.01)"),
    max_grad_norm: float = typer.Option(None, help="gradient clipping norm (default 1.0)"),
    same_source_batches: bool = typer.Option(None, "--same-source-batches/--mixed-source-batches",
                                             help="each global batch from one --data source (default on)"),
    save_steps: int = typer.Option(None, help="checkpoint every N steps (0: no checkpoints, only the model)"),
    logging_steps: int = typer.Option(None, help="TensorBoard scalars every N steps"),
    allow_network: bool = typer.Option(None, "--allow-network", help="may fetch a hub model"),
    seed: int = typer.Option(None, help="seed"),
    workers: int = typer.Option(None, help="dataloader worker processes per device"),
    resume: bool = typer.Option(None, "--resume/--no-resume", help="continue from the newest checkpoint"),
    eval_tasks: list[str] = typer.Option(None, "--eval", help="evaluate on these tasks (folder, tasks YAML, or "
                                         "suite:dev) at the start, every --eval-steps and at the end"),
    eval_holdout: float = typer.Option(None, help="keep this share of the training rows out of training and "
                                       "evaluate retrieval on it"),
    eval_steps: int = typer.Option(None, help="evaluate every N steps too (default: start and end only)"),
    eval_max_per_task: int = typer.Option(None, help="seeded subsample per evaluation task (default 500)"),
    keep_best: bool = typer.Option(None, "--keep-best", help="save the best evaluated model to OUT/best_model"),
    encoder_mask_ratio: float = typer.Option(None, help="retromae: share of words masked for the encoder (0.3)"),
    decoder_mask_ratio: float = typer.Option(None, help="retromae: share of context hidden from each decoder "
                                             "position (0.5)"),
    whole_word_masking: bool = typer.Option(None, "--whole-word-masking/--per-token-masking",
                                            help="retromae: mask jieba words whole (default) or single tokens"),
) -> None:
    from ..stages import STAGES, run_stage

    flags = dict(stage=stage, model=model, max_steps=max_steps, epochs=epochs, batch_size=batch_size,
                 learning_rate=learning_rate, temperature=temperature, train_group_size=group_size,
                 cross_device=cross_device, gradcache_chunk=gradcache_chunk, pooling=pooling,
                 query_prompt=query_prompt, passage_prompt=passage_prompt, distill_weight=distill_weight,
                 precision=precision, gradient_checkpointing=gradient_checkpointing, save_steps=save_steps,
                 freeze_embeddings=freeze_embeddings, query_max_len=query_max_len, passage_max_len=passage_max_len,
                 warmup_ratio=warmup_ratio, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
                 same_source_batches=same_source_batches, logging_steps=logging_steps, allow_network=allow_network,
                 seed=seed, workers=workers, resume=resume, eval_holdout=eval_holdout, eval_steps=eval_steps,
                 eval_max_per_task=eval_max_per_task, keep_best=keep_best, encoder_mask_ratio=encoder_mask_ratio,
                 decoder_mask_ratio=decoder_mask_ratio, whole_word_masking=whole_word_masking,
                 data=list(data) if data else None, eval=list(eval_tasks) if eval_tasks else None)
    options = stage_options(config_file, flags)
    out_dir = out_dir or options.pop("output_dir", None)
    if not out_dir:
        raise CmtpError("give --out DIR (or output_dir: in the config file)")
    summary = run_stage(STAGES["train"], [], out_dir, options, overwrite=overwrite).extra
    n = summary["loss_window"]
    if not n:
        out.print(f"nothing to train: {summary['steps']} steps were already done; model saved to {summary['model']}")
        return
    out.print(f"trained {summary['steps']} steps; loss {summary['first_loss']:.4f} -> {summary['final_loss']:.4f} "
              f"(mean of the first and last {n} step{'s' if n > 1 else ''}); "
              f"{summary['samples_per_second']:.1f} samples/s; model saved to {summary['model']}")
    if summary.get("eval"):
        print_eval_summary(summary["eval"])
    if summary["malformed_rows"]:
        out.print(f"skipped {summary['malformed_rows']} unusable rows (no query or positive, bad negatives, or "
                  f"teacher scores not one per passage)")


def print_eval_summary(e: dict) -> None:
    """The final model against the starting one on the run's evaluation, with a loud warning if it is worse."""
    from rich.table import Table

    from ..console import err

    table = Table(title=f"evaluation: start (step {e['start']['step']}) vs final (step {e['final']['step']})")
    for column in ["task", "metric", "start", "final", "delta"]:
        table.add_column(column, justify="left" if column in ("task", "metric") else "right")
    for r in e["rows"]:
        style = "red" if r["delta"] < 0 else None
        table.add_row(r["task"], r["metric"], f"{100 * r['base']:.2f}", f"{100 * r['other']:.2f}",
                      f"{100 * r['delta']:+.2f}", style=style)
    out.print(table)
    if e["worse_than_start"]:
        err.print(f"[bold red]WARNING: the trained model is WORSE than the model it started from[/bold red] "
                  f"(average {100 * e['start']['average']:.2f} -> {100 * e['final']['average']:.2f}; worse on "
                  f"{', '.join(e['tasks_worse'])}). Best evaluated step: {e['best_step']}. Do not ship it as is: "
                  "see the README's training recipe (learning rate, batch size, hard negatives).")
    elif e["tasks_worse"]:
        err.print(f"[yellow]note:[/yellow] better on average, worse on {', '.join(e['tasks_worse'])}")
