"""The table a stage command prints from its manifest: rows in, out and dropped by reason per source, and where
each output went. Shared by extract, dedup and score."""

from __future__ import annotations

from rich.table import Table

from ..console import out


def print_manifest_summary(manifest) -> None:
    table = Table(title=f"{manifest.stage}: in {manifest.count_in}, out {manifest.count_out}")
    for column in ["source", "in", "out", "dropped"]:
        table.add_column(column)
    for source, c in manifest.per_source.items():
        dropped = ", ".join(f"{r}={n}" for r, n in sorted(c["dropped"].items(), key=lambda kv: -kv[1]))
        table.add_row(source, str(c["in"]), str(c["out"]), dropped)
    out.print(table)
    for name, o in manifest.outputs.items():
        out.print(f"  {name}: {o['rows']} rows in {o['files']} file(s) at {o['path']}")
