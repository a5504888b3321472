"""``cmtp export``: mine's training examples (or pairs) for FlagEmbedding's or sentence-transformers' trainers."""

from __future__ import annotations

from enum import StrEnum

import typer

from ..console import err, out

HELP = """Export training data in the format another trainer reads, streamed a row group at a time.

--format flagembedding writes JSON lines for FlagEmbedding's fine-tuning (query, pos, neg, pos_scores, neg_scores,
the instruction as prompt, type for symmetric tasks); rows without negatives are left out. --format
sentence-transformers writes Parquet with anchor, positive, negative_1..N, the columns SentenceTransformerTrainer
gives MultipleNegativesRankingLoss; N is --negatives (default: what mine was asked for), rows with fewer are left
out.

Examples:
  cmtp export work/mine --format flagembedding --out export/train.jsonl
  cmtp export work/mine --format sentence-transformers --out export/train.parquet --negatives 7
  cmtp export work/score --format sentence-transformers --out export/pairs.parquet
"""


class ExportFormat(StrEnum):
    flagembedding = "flagembedding"
    sentence_transformers = "sentence-transformers"


def export(
    input_path: str = typer.Argument(..., metavar="INPUT", help="mine's output, training-example Parquet, or pairs"),
    fmt: ExportFormat = typer.Option(..., "--format", help="flagembedding (JSON lines) or sentence-transformers"),
    out_path: str = typer.Option(..., "--out", help="the file to write (.jsonl for flagembedding, .parquet else)"),
    negatives: int = typer.Option(None, min=0, help="sentence-transformers: negative columns (default: mine's "
                                                    "--negatives, 0 for pairs)"),
) -> None:
    from ..export import export as run

    summary = run(input_path, out_path, fmt.value, negatives)
    left = ", ".join(f"{reason}={n:,}" for reason, n in summary["left_out"].items())
    out.print(f"export: {summary['written']:,} of {summary['rows']:,} rows to {summary['out']}", highlight=False)
    if left:
        err.print(f"left out: {left}", highlight=False)
