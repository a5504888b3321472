"""``cmtp score``: title-passage cosine with a sentence-transformers model (Beam RunInference), cut at a
threshold; kept and rejected pairs both keep their score and the scorer's identity."""

from __future__ import annotations

import typer

from cmtp.transforms.common.parquet_shards import ShardOptions
from cmtp.transforms.score.config import ScoreConfig

from .common import BEAM_ARGS_HELP, ConfigFile, OutDir, Overwrite, Workers, run_command
from .manifest_summary import print_manifest_summary
from .options import config_options

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


@config_options(ScoreConfig, ShardOptions)
def score(
    ctx: typer.Context,
    inputs: list[str] = typer.Argument(..., help="input directory or Parquet glob (then Beam args after --)"),
    *, out_dir: OutDir, overwrite: Overwrite = False, config_file: ConfigFile = None, workers: Workers = None,
    rethreshold: float = typer.Option(None, help="INPUT is a score output: re-cut its stored scores at this "
                                                 "threshold into --out (no model, no re-scoring)"),
    target_keep_rate: float = typer.Option(None, help="score, then cut where this share (0-1) of pairs is kept"),
    **flags,
) -> None:
    flags.update(workers=workers, rethreshold=rethreshold, target_keep_rate=target_keep_rate)
    manifest = run_command("score", ctx, inputs, out_dir, config_file, overwrite, flags)
    print_manifest_summary(manifest)
