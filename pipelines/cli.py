"""The ``cmtp`` command line: one typer app whose sub-commands run the stages.

User mistakes (a bad path, an unknown schema, a model that is not on disk) raise :class:`CmtpError`; ``main``
prints them as one ``error:`` line and exits 1. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import typer

from schemas import CmtpError
from schemas.manifest import cmtp_version

from .commands import models_cmd, schema_cmd
from .console import err

app = typer.Typer(
    name="cmtp",
    help="Build a C-MTP style Chinese embedding corpus and train embedding models on it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(schema_cmd.app, name="schema")
app.add_typer(models_cmd.app, name="models")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cmtp {cmtp_version()}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version"),
) -> None:
    """cmtp: extract -> dedup -> score -> mine -> train, each stage Parquet in, Parquet + manifest out."""


def main() -> None:
    try:
        app()
    except CmtpError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(1)
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        err.print(f"[red]error:[/red] {exc.strerror or exc}: {exc.filename}", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
