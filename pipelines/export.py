"""``cmtp export``: a stage's training data in the formats other trainers read, streamed a row group at a time.

- ``flagembedding``: JSON lines as FlagEmbedding's fine-tuning reads them (``AbsEmbedderTrainDataset``): ``query``,
  ``pos``, ``neg``, ``pos_scores``, ``neg_scores``, the instruction as ``prompt``, and ``type`` for the symmetric
  tasks (FlagEmbedding halves their batch and groups them apart). FlagEmbedding draws a query's group from its
  negatives and divides by their count, so a row without negatives is left out (and counted).
- ``sentence-transformers``: Parquet with ``anchor``, ``positive`` and ``negative_1`` .. ``negative_N``: the columns
  ``SentenceTransformerTrainer`` hands ``MultipleNegativesRankingLoss`` as they are (an instruction is prefixed to
  the anchor). A loss takes a fixed number of columns: ``N`` is ``--negatives`` (default: what mine was asked for,
  0 for pairs); a row with fewer negatives is left out (and counted), a row with more keeps its first ``N``.

The input is mine's output (its ``examples/``), any ``training_example`` Parquet, or pairs (score's ``kept/``,
dedup's ``pairs/``: query = title, positive = passage, no negatives). The output is written beside its place and
moved there when complete.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from cmtp.schemas import CmtpError, Manifest
from cmtp.transforms.common.paths import parquet_files, row_groups
from cmtp.transforms.common.progress import bar

FORMATS = ("flagembedding", "sentence-transformers")
# our task names -> FlagEmbedding's data types (retrieval is its default and needs none)
FLAG_TYPES = {"sts": "symmetric_sts", "pair": "symmetric_sts", "pair_classification": "symmetric_sts",
              "classification": "symmetric_class", "clustering": "symmetric_clustering"}


def _examples(path: str):
    """(row-group count, rows) of training examples from the input, a row group at a time; pairs become examples
    without negatives."""
    files = parquet_files(path, ("examples", "kept", "pairs"))
    groups = row_groups(files)
    total = sum(g.rows for g in groups)

    def rows():
        for group in groups:
            with fsspec.open(group.path, "rb") as fh:
                table = pq.ParquetFile(fh).read_row_group(group.row_group)
            names = set(table.column_names)
            if {"query", "pos"} <= names:
                yield from table.to_pylist()
            elif {"title", "passage"} <= names:
                yield from ({"query": r["title"], "pos": [r["passage"]], "neg": [], "instruction": None,
                             "task": "retrieval", "pos_scores": [], "neg_scores": []} for r in table.to_pylist())
            else:
                raise CmtpError(f"{group.path} holds neither training examples (query, pos) nor pairs (title, "
                                "passage)")
    return total, rows()


def _flagembedding_line(row: dict) -> str:
    record = {"query": row["query"], "pos": list(row["pos"]), "neg": list(row.get("neg") or [])}
    pos_scores, neg_scores = row.get("pos_scores") or [], row.get("neg_scores") or []
    if len(pos_scores) == len(record["pos"]) and len(neg_scores) == len(record["neg"]):
        record["pos_scores"], record["neg_scores"] = [float(s) for s in pos_scores], [float(s) for s in neg_scores]
    if row.get("instruction"):
        record["prompt"] = row["instruction"]
    if row.get("task") in FLAG_TYPES:
        record["type"] = FLAG_TYPES[row["task"]]
    return json.dumps(record, ensure_ascii=False)


def default_negatives(path: str) -> int:
    """What mine was asked for when the input is its output (its rows have that many unless they fell short)."""
    try:
        manifest = Manifest.read(path.rstrip("/").removesuffix("/examples"))
    except CmtpError:
        return 0
    return int(manifest.config.get("negatives", 0)) if manifest.stage == "mine" else 0


def _temporary(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.with_name(f".{out.name}.tmp")


def export(path: str, out: str, fmt: str, negatives: int | None = None) -> dict:
    """Write ``path``'s examples to ``out`` in ``fmt``; returns {rows, written, left_out: {reason: n}, out}."""
    if fmt not in FORMATS:
        raise CmtpError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    total, rows = _examples(path)
    target = Path(out)
    if target.is_dir():
        raise CmtpError(f"--out {out} is a folder; give the file to write")
    tmp = _temporary(target)
    left_out: Counter = Counter()
    written = 0
    try:
        with bar(f"export {fmt}", total, "row") as progress:
            if fmt == "flagembedding":
                with open(tmp, "w", encoding="utf-8") as fh:
                    for row in rows:
                        progress.update()
                        if not row.get("neg"):  # FlagEmbedding divides by the negatives' count
                            left_out["no_negatives"] += 1
                            continue
                        fh.write(_flagembedding_line(row) + "\n")
                        written += 1
            else:
                n = default_negatives(path) if negatives is None else negatives
                written = _write_sentence_transformers(rows, tmp, n, left_out, progress)
            if not written:
                raise CmtpError(f"nothing to export from {path}: {dict(left_out) or 'no rows'}"
                                + (" (FlagEmbedding's fine-tuning needs negatives: export mine's output)"
                                   if left_out.get("no_negatives") == total else ""))
        os.replace(tmp, target)
    except OSError as exc:
        raise CmtpError(f"{exc.strerror or exc}: {out}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return {"rows": total, "written": written, "left_out": dict(left_out), "out": str(target)}


def _write_sentence_transformers(rows, tmp: Path, n: int, left_out: Counter, progress, batch: int = 4096) -> int:
    schema = pa.schema([("anchor", pa.string()), ("positive", pa.string()),
                        *[(f"negative_{i + 1}", pa.string()) for i in range(n)]])
    written, buffer = 0, {name: [] for name in schema.names}
    with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for row in rows:
            progress.update()
            neg = list(row.get("neg") or [])
            if len(neg) < n:  # a loss takes a fixed number of columns
                left_out["fewer_negatives"] += 1
                continue
            buffer["anchor"].append((row.get("instruction") or "") + row["query"])
            buffer["positive"].append(row["pos"][0])
            for i in range(n):
                buffer[f"negative_{i + 1}"].append(neg[i])
            written += 1
            if len(buffer["anchor"]) == batch:
                writer.write_table(pa.table(buffer, schema=schema))
                buffer = {name: [] for name in schema.names}
        writer.write_table(pa.table(buffer, schema=schema))
    return written
