"""``cmtp models``: prepare the built-in embedding model offline and list the models cmtp can use."""

from __future__ import annotations

import time

import typer
from rich.table import Table

from cmtp.transforms.embedding import BUILTIN_MODELS, DEFAULT_MODEL, prepare_builtin
from cmtp.transforms.embedding.registry import builtin_path, cache_dir

from ..console import err, out

app = typer.Typer(help="Prepare and list embedding models (all offline).", no_args_is_help=True)


@app.command("prepare")
def prepare(
    name: str = typer.Argument(DEFAULT_MODEL, help="built-in model name, e.g. builtin:me5-small"),
) -> None:
    """Convert a built-in model into the cache directory once; later calls return at once.

    Examples:
      cmtp models prepare
      CMTP_CACHE_DIR=/data/cache cmtp models prepare builtin:me5-small
    """
    started = time.perf_counter()
    with err.status(f"preparing {name} (first time only)..."):
        path, record, created = prepare_builtin(name)
    verb = "prepared" if created else "already prepared"
    out.print(f"{name} {verb} at {path} ({time.perf_counter() - started:.1f}s)")


@app.command("list")
def list_models() -> None:
    """List the built-in models, whether they are prepared, and the cache directory.

    Example: cmtp models list
    """
    table = Table(title=f"built-in models (cache: {cache_dir()})")
    for column in ["name", "prepared", "description"]:
        table.add_column(column)
    for model in BUILTIN_MODELS.values():
        ready = (builtin_path(model.key) / "cmtp_model.json").exists()
        table.add_row(model.name, "yes" if ready else "no", model.description)
    out.print(table)
    out.print("Any sentence-transformers directory or hub id in the local Hugging Face cache works too.")
