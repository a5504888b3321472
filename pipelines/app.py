"""The ``cmtp`` typer app: the root command and its sub-commands (one module each in ``commands/``)."""

from __future__ import annotations

import typer

from cmtp.schemas.manifest import cmtp_version

from .commands import (
    audit_cmd,
    build_cmd,
    dedup_cmd,
    eval_cmd,
    export_cmd,
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


def _reflowed(text: str) -> str:
    """Each prose paragraph on one line, for the terminal to wrap at its width (typer keeps a help's line breaks, so
    source lines wider than the terminal came out ragged); indented paragraphs (examples) keep theirs."""
    return "\n\n".join(p if p.startswith(" ") else " ".join(p.split()) for p in text.strip().split("\n\n"))


# one line each in `cmtp --help` (the first paragraph of a command's help keeps its source line breaks there)
for name, module, command, short, settings in [
    ("extract", extract_cmd, extract_cmd.extract, "Extract clean (title, passage) pairs from raw dumps.", _STAGE),
    ("dedup", dedup_cmd, dedup_cmd.dedup, "Drop near-duplicate pairs (MinHash LSH, exact Jaccard check).", _STAGE),
    ("score", score_cmd, score_cmd.score, "Score pairs with an embedding model; keep those at the threshold or above.",
     _STAGE),
    ("audit", audit_cmd, audit_cmd.audit, "What each threshold keeps; with --proxy, which cut trains better.", None),
    ("mine", mine_cmd, mine_cmd.mine, "Mine hard negatives into training-example shards.", _STAGE),
    ("train", train_cmd, train_cmd.train, "Train an embedding model (retromae, contrastive, finetune).", None),
    ("eval", eval_cmd, eval_cmd.eval_model, "Evaluate a model on C-MTEB-style tasks.", None),
    ("build", build_cmd, build_cmd.build, "Run the chain a YAML file describes, re-running only what changed.",
     _STAGE),
    ("export", export_cmd, export_cmd.export, "Export training data for FlagEmbedding or sentence-transformers.",
     None),
]:
    app.command(name, help=_reflowed(module.HELP), short_help=short, context_settings=settings)(command)


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
