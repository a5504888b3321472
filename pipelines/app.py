"""The ``cmtp`` typer app: the root command and its sub-commands (one module each in ``commands/``)."""

from __future__ import annotations

import typer

from cmtp.schemas.manifest import cmtp_version

from .commands import (
    audit_cmd,
    build_cmd,
    dedup_cmd,
    eval_cmd,
    extract_cmd,
    mine_cmd,
    models_cmd,
    schema_cmd,
    score_cmd,
    train_cmd,
)

app = typer.Typer(
    name="cmtp",
    help="Build a C-MTP style Chinese embedding corpus and train embedding models on it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(schema_cmd.app, name="schema")
app.add_typer(models_cmd.app, name="models")

_STAGE = {"allow_extra_args": True, "ignore_unknown_options": False}
app.command("extract", help=extract_cmd.HELP, context_settings=_STAGE)(extract_cmd.extract)
app.command("dedup", help=dedup_cmd.HELP, context_settings=_STAGE)(dedup_cmd.dedup)
app.command("score", help=score_cmd.HELP, context_settings=_STAGE)(score_cmd.score)
app.command("audit", help=audit_cmd.HELP)(audit_cmd.audit)
app.command("mine", help=mine_cmd.HELP, context_settings=_STAGE)(mine_cmd.mine)
app.command("train", help=train_cmd.HELP)(train_cmd.train)
app.command("eval", help=eval_cmd.HELP)(eval_cmd.eval_model)
app.command("build", help=build_cmd.HELP, context_settings=_STAGE)(build_cmd.build)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cmtp {cmtp_version()}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version"),
    verbose: bool = typer.Option(False, "--verbose", "-v",
                                 help="show the libraries' logs (Beam, transformers, jieba); also CMTP_LOG=debug"),
) -> None:
    """cmtp: extract -> dedup -> score -> mine -> train, each stage Parquet in, Parquet + manifest out."""
    if verbose:
        from .logs import configure

        configure(be_verbose=True)
