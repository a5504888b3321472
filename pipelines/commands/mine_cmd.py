"""``cmtp mine``: hard negatives from the task's own corpus by ANN search (faiss), with false-negative guards."""

from __future__ import annotations

import typer
from rich.table import Table

from cmtp.transforms.mine.config import MineConfig, MineRunOptions

from ..console import out
from .common import BEAM_ARGS_HELP, ConfigFile, OutDir, Overwrite, run_command
from .options import config_options

HELP = f"""Mine hard negatives for each query and write training-example shards for the trainer.

INPUT is a cmtp score output (its kept/ pairs: query = title, positive = passage) or a pair Parquet glob; add
labeled data with --labeled (JSON lines or Parquet with query, pos, neg). The pool is every passage of the
inputs, or --pool. Pool and queries are embedded by a Beam pipeline into disk shards (--workers local processes,
or any runner's workers after `--`); then one index (exact up to --flat-max passages, IVF above; GPU when faiss
sees one) is searched in --search-partitions query partitions, merged in example order: the output is the same
for any number of workers and partitions.

Examples:

  cmtp mine work/score --out work/mine

  cmtp mine work/score --out work/mine --model /models/bge-base-zh --range 10-210 --negatives 15
  --query-instruction 为这个句子生成表示以用于检索相关文章： --train-instruction 为这个句子生成表示以用于检索相关文章：

  cmtp mine --labeled qa.jsonl --pool work/extract/pretrain --out work/mine-qa

  cmtp mine work/score --out work/mine --config mine.yaml          # any MineConfig field, flags override

  cmtp mine work/score --out work/mine --workers 2 --search-partitions 2

{BEAM_ARGS_HELP}
"""


@config_options(MineConfig, MineRunOptions, skip=("range_start", "range_end"))
def mine(
    ctx: typer.Context,
    inputs: list[str] = typer.Argument(None, help="scored pairs directory or Parquet glob (optional with --labeled)"),
    *, out_dir: OutDir, overwrite: Overwrite = False, config_file: ConfigFile = None,
    rank_range: str = typer.Option(None, "--range", help="sample negatives from these ranks (default 10-210)"),
    **flags,
) -> None:
    """Defaults live in MineConfig alone: a flag left out keeps the config file's value, else MineConfig's."""
    flags.update(labeled=list(flags["labeled"]) if flags["labeled"] else None, range=rank_range)
    manifest = run_command("mine", ctx, inputs, out_dir, config_file, overwrite, flags)
    e = manifest.extra
    table = Table(title=f"mine: {manifest.count_out} examples from {manifest.count_in} inputs; pool {e['pool_size']}")
    table.add_column("what")
    table.add_column("value", justify="right")
    for reason, n in e["guards_removed"].items():
        table.add_row(f"guard {reason}", str(n))
    table.add_row("rows short of negatives", str(e["rows_short_of_negatives"]))
    table.add_row("missing negatives", str(e["missing_negatives"]))
    table.add_row("score baseline (random pairs' median)", f"{e['score_baseline']:.4f}")
    index = e["index"]
    tried = index.get("fallback_from")
    table.add_row("index", f"{index['kind']} nprobe={index['nprobe']}" + (
        f" (tried {tried['kind']}: nprobe {tried['nprobe']} for recall {tried['measured_recall_at_k']:.3f})"
        if tried else ""))
    table.add_row("texts embedded/s", str(e["texts_embedded_per_second"]))
    table.add_row(f"queries/s (search + sampling, {e['search_partitions']} partition(s))",
                  str(e["queries_per_second"]))
    out.print(table)
    out.print(f"  examples: {manifest.outputs['examples']['rows']} rows at {manifest.outputs['examples']['path']}")
