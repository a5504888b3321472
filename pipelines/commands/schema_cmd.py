"""``cmtp schema``: list the Arrow schemas and the manifest layout, or show one of them."""

from __future__ import annotations

import json
from enum import StrEnum

import typer
from rich.table import Table

from cmtp.schemas import SCHEMA_VERSION, SCHEMAS, CmtpError
from cmtp.schemas.datasets import field_description
from cmtp.schemas.manifest import MANIFEST_FIELDS

from ..console import out

app = typer.Typer(help="Show the Arrow schemas the stages read and write.", no_args_is_help=True)


class SchemaFormat(StrEnum):
    table = "table"
    json = "json"
    arrow = "arrow"


def _names() -> list[str]:
    return sorted(SCHEMAS) + ["manifest"]


@app.command("list")
def list_schemas() -> None:
    """List the schema names.

    Example: cmtp schema list
    """
    for name in _names():
        desc = "stage manifest (JSON)" if name == "manifest" else SCHEMAS[name].metadata[b"description"].decode()
        out.print(f"[bold]{name}[/bold]  {desc}")


@app.command("show")
def show(
    name: str = typer.Argument(..., help="schema name, e.g. pair, training_example, manifest"),
    fmt: SchemaFormat = typer.Option(SchemaFormat.table, "--format", help="table, json or arrow"),
) -> None:
    """Print one schema: its fields, types, nullability and meaning.

    Examples:
      cmtp schema show pair
      cmtp schema show training_example --format json
    """
    if name == "manifest":
        rows = [(f, t, False, d) for f, t, d in MANIFEST_FIELDS]
    elif name in SCHEMAS:
        schema = SCHEMAS[name]
        if fmt is SchemaFormat.arrow:
            out.print(str(schema.remove_metadata()))
            return
        rows = [(f.name, str(f.type), f.nullable, field_description(f)) for f in schema]
    else:
        raise CmtpError(f"unknown schema {name!r}; known: {', '.join(_names())}")
    if fmt is SchemaFormat.json:
        fields = [{"name": n, "type": t, "nullable": nl, "description": d} for n, t, nl, d in rows]
        out.print_json(json.dumps({"name": name, "schema_version": SCHEMA_VERSION, "fields": fields}))
        return
    table = Table(title=f"{name} (schema {SCHEMA_VERSION})")
    for column in ["field", "type", "nullable", "description"]:
        table.add_column(column)
    for n, t, nl, d in rows:
        table.add_row(n, t, "yes" if nl else "no", d)
    out.print(table)
