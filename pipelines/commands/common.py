"""Options and parsing shared by the stage commands: YAML configs, shard flags, Beam pass-through args."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cmtp.schemas.errors import CmtpError
from cmtp.schemas.yaml_files import load_yaml

BEAM_ARGS_HELP = (
    "Arguments after `--` go to Beam, e.g. `-- --runner DataflowRunner --project P --region R "
    "--temp_location gs://B/tmp --sdk_container_image IMAGE`."
)


def split_beam_args(positionals: list[str], extra: list[str]) -> tuple[list[str], list[str]]:
    """Click hands everything after ``--`` to the positional list; the first item that looks like a flag
    starts the Beam arguments."""
    for i, value in enumerate(positionals):
        if value.startswith("-"):
            return positionals[:i], positionals[i:] + list(extra)
    return positionals, list(extra)


def load_yaml_config(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    import fsspec

    try:
        with fsspec.open(path, "r", encoding="utf-8") as fh:
            data = load_yaml(fh, f"config file {path}") or {}
    except FileNotFoundError as exc:
        raise CmtpError(f"config file not found: {path}") from exc
    if not isinstance(data, dict):
        raise CmtpError(f"config file {path} must hold a mapping of option: value")
    return data


def stage_options(config_file: str | None, flags: dict[str, Any]) -> dict[str, Any]:
    """A stage's options mapping: the ``--config`` YAML file, overridden by the flags the user set (non-None).
    ``pipelines/stages.py`` turns it into the stage's config and runner options, as it does a build file's."""
    return {**load_yaml_config(config_file), **{k: v for k, v in flags.items() if v is not None}}


# -- the parameters every stage command takes, declared once (typer reads them from these annotations) ------------
OutDir = Annotated[str, typer.Option("--out", "-o", help="output directory (local; gs://, s3:// for extract, dedup "
                                                       "and score)")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="replace an existing output of this stage (refused "
                                                             "otherwise)")]
ConfigFile = Annotated[str | None, typer.Option("--config", help="YAML file of this stage's options (any of the "
                                                                 "options below, by field name); flags override it")]
# the local worker count: a runner option of every Beam stage (its default is the stage's, pipelines/stages.py)
Workers = Annotated[int | None, typer.Option(help="local worker processes (ignored by remote runners; default: "
                                                  "the stage's)")]


def run_command(kind: str, ctx, positionals: list[str] | None, out_dir: str, config_file: str | None,
                overwrite: bool, flags: dict[str, Any], sources: bool = False):
    """Run stage ``kind`` for its command: the Beam arguments split off the positionals (which are its INPUT, or
    with ``sources`` extract's sources option), the options from ``--config`` overridden by the flags set."""
    from ..stages import STAGES, run_stage

    inputs, beam_args = split_beam_args(list(positionals or []), ctx.args)
    if sources:
        inputs, flags = [], {**flags, "sources": inputs or None}
    return run_stage(STAGES[kind], inputs, out_dir, stage_options(config_file, flags), beam_args, overwrite)
