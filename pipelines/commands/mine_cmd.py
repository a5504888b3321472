"""``cmtp mine``: hard negatives from the task's own corpus by ANN search (faiss), with false-negative guards."""

from __future__ import annotations

import typer
from rich.table import Table

from cmtp.transforms.embedding.engines import ENGINE_HELP

from ..console import out
from .common import (
    BEAM_ARGS_HELP,
    OVERWRITE_HELP,
    split_beam_args,
    stage_options,
)

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


def mine(
    ctx: typer.Context,
    inputs: list[str] = typer.Argument(None, help="scored pairs directory or Parquet glob (optional with --labeled)"),
    out_dir: str = typer.Option(..., "--out", "-o", help="output directory"),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    config_file: str = typer.Option(None, "--config", help="YAML file of mine options (fields of MineConfig)"),
    labeled: list[str] = typer.Option(None, "--labeled", help="labeled query/pos/neg file(s)"),
    pool: str = typer.Option(None, help="separate candidate pool (Parquet with passage/text, or JSON lines)"),
    model: str = typer.Option(None, help="embedding model (default: the scorer of INPUT, else builtin:me5-small)"),
    query_instruction: str = typer.Option(None, help="query prefix when embedding (default: model's query prompt)"),
    passage_prompt: str = typer.Option(None, help="passage prefix when embedding (default: model's prompt)"),
    train_instruction: str = typer.Option(None, help="instruction stored with each example for training"),
    rank_range: str = typer.Option(None, "--range", help="sample negatives from these ranks (default 10-210)"),
    negatives: int = typer.Option(None, help="negatives per query (default 15)"),
    seed: int = typer.Option(None, help="sampling seed (default 42)"),
    max_neg_ratio: float = typer.Option(
        None, help="drop likely false negatives: candidates above this share of the positive's score, both "
        "measured above the pool's random-pair median (default 0.95)"),
    near_dup_jaccard: float = typer.Option(None, help="drop candidates this similar to a positive (5-gram Jaccard, "
                                           "default 0.8)"),
    pad_random: bool = typer.Option(None, "--pad-random", help="fill short rows with random passages (marked)"),
    flat_max: int = typer.Option(None, help="exact search up to this pool size, IVF above (default 200,000)"),
    ivf_pq: bool = typer.Option(None, "--ivf-pq", help="IVF-PQ instead of IVF-Flat: dim/4 bytes per passage in "
                                "RAM, candidates re-ranked exactly from the disk shards"),
    rerank: int = typer.Option(None, help="with --ivf-pq: candidates fetched per neighbour before the exact re-rank"),
    pq_bytes: int = typer.Option(None, help="with --ivf-pq: code bytes per passage (default: dimensions / 4)"),
    nprobe: int = typer.Option(None, help="IVF probes (default: tuned to --target-recall on sampled queries)"),
    target_recall: float = typer.Option(None, help="recall@k of exact search the tuned nprobe must reach (0.99)"),
    batch_size: int = typer.Option(None, help="sentences per forward pass (default 64)"),
    max_seq_length: int = typer.Option(None, help="tokens per text (default 256)"),
    engine: str = typer.Option(None, help=ENGINE_HELP),
    rows_per_group: int = typer.Option(None, help="Parquet row-group size (the trainer streams row groups)"),
    num_shards: int = typer.Option(None, help="output shards (default 1)"),
    allow_network: bool = typer.Option(None, "--allow-network", help="may fetch a hub model"),
    workers: int = typer.Option(None, help="local Beam worker processes for embedding and search (default 1)"),
    search_partitions: int = typer.Option(None, help="query partitions searched in parallel (default 1: in this "
                                          "process)"),
    share_model: bool = typer.Option(None, "--share-model/--no-share-model",
                                     help="one model per machine for all workers (for one GPU; default off)"),
) -> None:
    """Defaults live in MineConfig alone: a flag left out keeps the config file's value, else MineConfig's."""
    from ..stages import STAGES, run_stage

    inputs, beam_args = split_beam_args(inputs or [], ctx.args)
    flags = dict(model=model, query_instruction=query_instruction, passage_prompt=passage_prompt,
                 train_instruction=train_instruction, negatives=negatives, seed=seed, max_neg_ratio=max_neg_ratio,
                 near_dup_jaccard=near_dup_jaccard, pad_random=pad_random, flat_max=flat_max, ivf_pq=ivf_pq,
                 rerank=rerank, pq_bytes=pq_bytes, nprobe=nprobe, target_recall=target_recall, batch_size=batch_size,
                 max_seq_length=max_seq_length, engine=engine, rows_per_group=rows_per_group, num_shards=num_shards,
                 allow_network=allow_network, workers=workers, search_partitions=search_partitions,
                 share_model=share_model, labeled=list(labeled) if labeled else None, pool=pool, range=rank_range)
    manifest = run_stage(STAGES["mine"], inputs, out_dir, stage_options(config_file, flags), beam_args, overwrite)
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
