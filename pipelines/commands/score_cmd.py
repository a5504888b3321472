"""``cmtp score``: title-passage cosine with a sentence-transformers model (Beam RunInference), cut at a
threshold; kept and rejected pairs both keep their score and the scorer's identity."""

from __future__ import annotations

import typer

from cmtp.transforms.embedding.engines import ENGINE_HELP

from .common import (
    BEAM_ARGS_HELP,
    OVERWRITE_HELP,
    NumShards,
    RowGroupSize,
    TargetShardRows,
    Workers,
    split_beam_args,
    stage_options,
)
from .manifest_summary import print_manifest_summary

HELP = f"""Score (title, passage) pairs with an embedding model and keep those at or above the threshold.

INPUT is a previous stage's output directory (its pairs/), a directory of Parquet files, or a glob. The
model is a built-in name, a local sentence-transformers directory, or a hub id already in the local cache.
Its own prompts are used (e5: "query: " / "passage: "; text2vec: none) unless --query-prompt/--passage-prompt.

Examples:

  cmtp score work/dedup --out work/score --model builtin:me5-small --threshold 0.8

  cmtp score work/dedup --out work/score --model /models/text2vec-base-chinese

  cmtp score work/dedup --out work/score --model shibing624/text2vec-base-chinese --allow-network

  cmtp score work/dedup --out work/score --model builtin:me5-small --target-keep-rate 0.8

  cmtp score --rethreshold 0.9008 work/score --out work/score-0.9008     # replay a cut, no model needed

Thresholds belong to a scorer: 0.43 is C-MTP's cut for Text2Vec-Chinese (cosines spread over 0.2-0.9); e5 models
put almost every title-passage pair between 0.80 and 0.97, so cut them by keep rate (--target-keep-rate, or
`cmtp audit --target-keep-rate` then --rethreshold) rather than by a fixed number.

{BEAM_ARGS_HELP}
"""


def score(
    ctx: typer.Context,
    inputs: list[str] = typer.Argument(..., help="input directory or Parquet glob (then Beam args after --)"),
    out_dir: str = typer.Option(..., "--out", "-o", help="output directory (local, gs://, s3://)"),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    config_file: str = typer.Option(None, "--config", help="YAML file of score options"),
    model: str = typer.Option(None, help="scoring model (default shibing624/text2vec-base-chinese)"),
    threshold: float = typer.Option(None, help="keep pairs with score >= this (default 0.43)"),
    batch_size: int = typer.Option(None, help="sentences per forward pass (default 64)"),
    max_seq_length: int = typer.Option(None, help="tokens per text (default 256)"),
    query_prompt: str = typer.Option(None, help="prefix for titles (default: the model's query prompt)"),
    passage_prompt: str = typer.Option(None, help="prefix for passages (default: the model's passage prompt)"),
    device: str = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda when present)"),
    engine: str = typer.Option(None, help=ENGINE_HELP),
    share_model: bool = typer.Option(None, "--share-model/--no-share-model",
                                     help="one model per machine for all workers (default on)"),
    allow_network: bool = typer.Option(None, "--allow-network/--offline", help="may fetch a hub model"),
    num_shards: NumShards = None,
    target_shard_rows: TargetShardRows = None,
    row_group_size: RowGroupSize = None,
    workers: Workers = None,
    rethreshold: float = typer.Option(None, help="INPUT is a score output: re-cut its stored scores at this "
                                                 "threshold into --out (no model, no re-scoring)"),
    target_keep_rate: float = typer.Option(None, help="score, then cut where this share (0-1) of pairs is kept"),
) -> None:
    from ..stages import STAGES, run_stage

    inputs, beam_args = split_beam_args(inputs, ctx.args)
    flags = dict(model=model, threshold=threshold, batch_size=batch_size, max_seq_length=max_seq_length,
                 query_prompt=query_prompt, passage_prompt=passage_prompt, device=device, engine=engine,
                 share_model=share_model, allow_network=allow_network, workers=workers, num_shards=num_shards,
                 target_shard_rows=target_shard_rows, row_group_size=row_group_size, rethreshold=rethreshold,
                 target_keep_rate=target_keep_rate)
    manifest = run_stage(STAGES["score"], inputs, out_dir, stage_options(config_file, flags), beam_args, overwrite)
    print_manifest_summary(manifest)
