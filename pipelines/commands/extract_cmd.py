"""``cmtp extract``: raw dumps -> clean title-passage pairs, pretraining text, dead letters and a manifest."""

from __future__ import annotations

import typer

from cmtp.transforms.common.parquet_shards import ShardOptions
from cmtp.transforms.extract.adapters import ADAPTERS
from cmtp.transforms.extract.config import ExtractConfig

from .common import BEAM_ARGS_HELP, ConfigFile, OutDir, Overwrite, Workers, run_command
from .manifest_summary import print_manifest_summary
from .options import config_options

HELP = f"""Extract clean (title, passage) pairs from raw dumps with Apache Beam.

SOURCE is ADAPTER=GLOB or NAME:ADAPTER=GLOB (local, gs://, s3://; .gz/.bz2/.xz/.zst read transparently).
Adapters: {', '.join(sorted(ADAPTERS))}.

Examples:

  cmtp extract wudao='dumps/wudao/*.json' csl=dumps/csl/ts_dev.tsv --out work/extract

  cmtp extract news='gs://bucket/news/*.jsonl.gz' --out gs://bucket/work/extract -- --runner DataflowRunner
  --project P --region us-central1 --temp_location gs://bucket/tmp

  cmtp extract myset:generic=data.csv --title-field question --passage-field answer --out work/extract

  cmtp extract zhihu='dumps/zhihu/*.jsonl' --adapter-option title_with_desc=true --out work/extract

  cmtp extract mine:myformat='dumps/*.txt' --plugin mypkg.cmtp_adapters --out work/extract

{BEAM_ARGS_HELP}
"""


@config_options(ExtractConfig, ShardOptions)
def extract(
    ctx: typer.Context,
    sources: list[str] = typer.Argument(None, help="ADAPTER=GLOB or NAME:ADAPTER=GLOB, one or more (or sources: "
                                        "in the --config file)"),
    *, out_dir: OutDir, overwrite: Overwrite = False, config_file: ConfigFile = None, workers: Workers = None,
    title_field: str = typer.Option(None, help="generic adapter: title column"),
    passage_field: str = typer.Option(None, help="generic adapter: passage column"),
    meta_fields: str = typer.Option(None, help="generic adapter: comma-separated columns kept in meta"),
    adapter_option: list[str] = typer.Option(None, "--adapter-option", help="KEY=VALUE for the adapters that "
                                             "have it, e.g. title_with_desc=true (zhihu), passage=text (xlsum)"),
    plugin: list[str] = typer.Option(None, "--plugin", help="module registering more adapters (importable on "
                                     "every worker)"),
    **flags,
) -> None:
    generic = {"title_field": title_field, "passage_field": passage_field, "meta_fields": meta_fields}
    adapter_options = list(adapter_option or []) + [f"{k}={v}" for k, v in generic.items() if v is not None]
    flags.update(adapter_options=adapter_options or None, plugins=list(plugin) if plugin else None, workers=workers)
    flags["extra_blocklists"] = list(flags["extra_blocklists"]) if flags["extra_blocklists"] else None
    manifest = run_command("extract", ctx, sources, out_dir, config_file, overwrite, flags, sources=True)
    print_manifest_summary(manifest)
