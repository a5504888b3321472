"""``cmtp dedup``: MinHash-LSH near-duplicate removal of pairs, clustered with connected components in Beam."""

from __future__ import annotations

import typer

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

HELP = f"""Remove near-duplicate pairs (MinHash LSH on character n-grams, exact Jaccard check, connected
components in Beam); one representative per cluster is kept, the rest go to the dead letters.

INPUT is a previous stage's output directory (its pairs/), a directory of Parquet files, or a glob.

Examples:

  cmtp dedup work/extract --out work/dedup

  cmtp dedup work/extract --out work/dedup --threshold 0.7 --field title_passage --shingle word --ngram 2

{BEAM_ARGS_HELP}
"""


def dedup(
    ctx: typer.Context,
    inputs: list[str] = typer.Argument(..., help="input directory or Parquet glob (then Beam args after --)"),
    out_dir: str = typer.Option(..., "--out", "-o", help="output directory (local, gs://, s3://)"),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    config_file: str = typer.Option(None, "--config", help="YAML file of dedup options"),
    threshold: float = typer.Option(None, help="Jaccard threshold of a near duplicate (default 0.8)"),
    field: str = typer.Option(None, help="passage (default), title_passage or title"),
    shingle: str = typer.Option(None, help="char (default) or word (jieba)"),
    ngram: int = typer.Option(None, help="shingle size (default 5 characters)"),
    num_perm: int = typer.Option(None, help="MinHash permutations (default 128)"),
    bands: int = typer.Option(None, help="LSH bands (with --rows; default: optimum for the threshold)"),
    rows: int = typer.Option(None, help="LSH rows per band"),
    verify: bool = typer.Option(None, "--verify/--no-verify", help="exact Jaccard check of candidates (default on)"),
    policy: str = typer.Option(None, help="representative: longest (default) or lowest_id"),
    num_shards: NumShards = None,
    target_shard_rows: TargetShardRows = None,
    row_group_size: RowGroupSize = None,
    workers: Workers = None,
) -> None:
    from ..stages import STAGES, run_stage

    inputs, beam_args = split_beam_args(inputs, ctx.args)
    flags = dict(threshold=threshold, field=field, shingle=shingle, ngram=ngram, num_perm=num_perm, bands=bands,
                 rows=rows, verify=verify, policy=policy, workers=workers, num_shards=num_shards,
                 target_shard_rows=target_shard_rows, row_group_size=row_group_size)
    manifest = run_stage(STAGES["dedup"], inputs, out_dir, stage_options(config_file, flags), beam_args, overwrite)
    print_manifest_summary(manifest)
    lsh = manifest.extra["lsh"]
    sizes = ", ".join(f"{k}: {v}" for k, v in manifest.extra["cluster_sizes"].items())
    from ..console import out

    out.print(f"  LSH {lsh['bands']} bands x {lsh['rows']} rows; candidate edges {manifest.extra['candidate_edges']}"
              f" ({manifest.extra['edges_rejected_by_jaccard']} rejected by exact Jaccard); cluster sizes {sizes}")
