"""The dataset card of a stage's output folder: ``README.md`` in the Hugging Face Hub's format, written with the
stage's outputs, so the folder is a dataset to the tools people load data with.

Its YAML lists one ``configs`` entry per data subfolder (``datasets.load_dataset("work/score", "kept")``; the stage's
main output is the default); the body gives each output's features from ``schemas/``, the counts and drop reasons of
the manifest, and the lineage (the stage, its input, its options, the versions). An output without rows is left
out of the configs with a line saying why: its one zero-row file carries the schema, and ``datasets`` refuses a
zero-row Parquet file.
"""

from __future__ import annotations

import json

from apache_beam.io.filesystems import FileSystems

from cmtp.schemas import SCHEMAS, Manifest
from cmtp.schemas.datasets import field_description

CARD = "README.md"


def dataset_card(manifest: Manifest, outputs: tuple[str, ...]) -> str | None:
    """The card's text, or None when the stage writes no dataset (a model, an evaluation)."""
    data = [(name, manifest.outputs[name]) for name in outputs
            if name in manifest.outputs and manifest.outputs[name].get("schema") in SCHEMAS]
    if not data:
        return None
    loadable = [(name, o) for name, o in data if o.get("rows")]
    configs = "".join(f"- config_name: {name}\n" + ("  default: true\n" if i == 0 else "")
                      + f"  data_files:\n  - split: train\n    path: {name}/*.parquet\n"
                      for i, (name, _) in enumerate(loadable))
    header = (f"---\nconfigs:\n{configs}" if configs else "---\n") + \
        f"language:\n- zh\ntags:\n- cmtp\n- cmtp-{manifest.stage}\npretty_name: cmtp {manifest.stage} output\n---\n"
    parts = [f"# The output of `cmtp {manifest.stage}`", ""]
    parts += [f"{manifest.count_in:,} records in, {manifest.count_out:,} out"
              + (", dropped: " + ", ".join(f"{reason} {n:,}" for reason, n in manifest.dropped.items())
                 if manifest.dropped else "") + ".", ""]
    parts += ["| config | rows | files | schema |", "|---|---|---|---|"]
    parts += [f"| {name} | {o.get('rows', 0):,} | {o.get('files', 0)} | `{o['schema']}` |" for name, o in data]
    empty = [name for name, o in data if not o.get("rows")]
    if empty:
        parts += ["", f"Not among the configs: {', '.join(empty)} (no rows: a zero-row file with the schema, which "
                      "pyarrow and pandas read and Hugging Face `datasets` refuses)."]
    parts += ["", "```python", "from datasets import load_dataset", "",
              f'rows = load_dataset("PATH_TO_THIS_FOLDER", "{loadable[0][0] if loadable else data[0][0]}", '
              'split="train")', "```", ""]
    if manifest.per_source:
        parts += ["## Counts by source", "", "| source | in | out | dropped |", "|---|---|---|---|"]
        parts += [f"| {source} | {c.get('in', 0):,} | {c.get('out', 0):,} | "
                  + ", ".join(f"{r} {n:,}" for r, n in c.get("dropped", {}).items()) + " |"
                  for source, c in manifest.per_source.items()]
        parts.append("")
    for schema_name in dict.fromkeys(o["schema"] for _, o in data):
        schema = SCHEMAS[schema_name]
        parts += [f"## Features of `{schema_name}`", "", "| field | type | meaning |", "|---|---|---|"]
        parts += [f"| `{f.name}` | `{f.type}` | {field_description(f).replace('|', '/')} |" for f in schema]
        parts.append("")
    parts += ["## Lineage", "", f"Written by `cmtp {manifest.stage}` (cmtp {manifest.cmtp_version}) from "
              + (", ".join(f"`{i}`" for i in manifest.inputs[:5]) + (" ..." if len(manifest.inputs) > 5 else "")
                 if manifest.inputs else "its sources") + ". Its options:", "", "```json",
              json.dumps(manifest.config, indent=2, ensure_ascii=False, default=str), "```", "",
              "Licences: the rows keep the terms of the dumps they came from (their `source` and `source_file`); "
              "cmtp does not change them.", ""]
    return header + "\n" + "\n".join(parts)


def write_dataset_card(folder: str, manifest: Manifest, outputs: tuple[str, ...]) -> None:
    text = dataset_card(manifest, outputs)
    if text is not None:
        with FileSystems.create(FileSystems.join(folder, CARD)) as fh:
            fh.write(text.encode("utf-8"))
