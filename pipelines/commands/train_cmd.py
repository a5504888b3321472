"""``cmtp train``: RetroMAE (stage 1), contrastive (stage 2) or fine-tune (stage 3) training on streamed Parquet
shards."""

from __future__ import annotations

import typer

from cmtp.schemas.errors import CmtpError
from cmtp.trainer.config import TrainConfig

from ..console import out
from .common import ConfigFile, stage_options
from .options import config_options

HELP = """Train an embedding model on Parquet shards streamed from any fsspec path: plain texts (extract's pretrain/)
for stage 1 (retromae), pairs (score's kept/) for stage 2 (contrastive), training examples (mine's examples/)
for stage 3 (finetune).

--data is PATH, NAME=PATH or NAME=PATH@WEIGHT (repeat it to mix datasets by weight). On several GPUs:
torchrun --nproc_per_node=8 -m cmtp.pipelines train ... (same flags). A run resumes from its newest checkpoint.

Examples:

  cmtp train --stage retromae --data work/extract/pretrain --out work/stage1 --batch-size 64

  cmtp train --stage contrastive --data work/score/kept --out work/stage2 --batch-size 256 --gradcache-chunk 64

  cmtp train --stage finetune --model work/stage2/model --data qa=work/mine/examples --data nli=nli/@0.5
  --out work/stage3 --train-group-size 8

  cmtp train --config train.yaml
"""


@config_options(TrainConfig)
def train(
    data: list[str] = typer.Option(None, "--data", help="PATH | NAME=PATH | NAME=PATH@WEIGHT, repeatable"),
    out_dir: str = typer.Option(None, "--out", "-o", help="output directory (checkpoints, tensorboard, model)"),
    config_file: ConfigFile = None,
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a finished run in --out (a run that did "
                                   "not finish resumes from its checkpoints without it)"),
    **flags,
) -> None:
    from ..stages import STAGES, lead_process, run_stage

    flags.update(data=list(data) if data else None, eval=list(flags["eval"]) if flags["eval"] else None)
    options = stage_options(config_file, flags)
    out_dir = out_dir or options.pop("output_dir", None)
    if not out_dir:
        raise CmtpError("give --out DIR (or output_dir: in the config file)")
    summary = run_stage(STAGES["train"], [], out_dir, options, overwrite=overwrite).extra
    if not lead_process():
        return
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
                  "see docs/recipes.md (learning rate, batch size, hard negatives).")
    elif e["tasks_worse"]:
        err.print(f"[yellow]note:[/yellow] better on average, worse on {', '.join(e['tasks_worse'])}")
