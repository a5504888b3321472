"""``cmtp dedup``: MinHash-LSH near-duplicate removal of pairs, clustered with connected components in Beam."""

from __future__ import annotations

import typer

from cmtp.transforms.common.parquet_shards import ShardOptions
from cmtp.transforms.dedup.config import DedupConfig

from .common import BEAM_ARGS_HELP, ConfigFile, OutDir, Overwrite, Workers, run_command
from .manifest_summary import print_manifest_summary
from .options import config_options

HELP = f"""Remove near-duplicate pairs (MinHash LSH on character n-grams, exact Jaccard check, connected
components in Beam); one representative per cluster is kept, the rest go to the dead letters.

INPUT is a previous stage's output directory (its pairs/), a directory of Parquet files, or a glob.

Examples:

  cmtp dedup work/extract --out work/dedup

  cmtp dedup work/extract --out work/dedup --threshold 0.7 --field title_passage --shingle word --ngram 2

{BEAM_ARGS_HELP}
"""


@config_options(DedupConfig, ShardOptions)
def dedup(
    ctx: typer.Context,
    inputs: list[str] = typer.Argument(..., help="input directory or Parquet glob (then Beam args after --)"),
    *, out_dir: OutDir, overwrite: Overwrite = False, config_file: ConfigFile = None, workers: Workers = None,
    **flags,
) -> None:
    manifest = run_command("dedup", ctx, inputs, out_dir, config_file, overwrite, {**flags, "workers": workers})
    print_manifest_summary(manifest)
    lsh = manifest.extra["lsh"]
    sizes = ", ".join(f"{k}: {v}" for k, v in manifest.extra["cluster_sizes"].items())
    from ..console import out

    out.print(f"  LSH {lsh['bands']} bands x {lsh['rows']} rows; candidate edges {manifest.extra['candidate_edges']}"
              f" ({manifest.extra['edges_rejected_by_jaccard']} rejected by exact Jaccard); cluster sizes {sizes}")
