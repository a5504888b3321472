"""The model card of a trained model: ``README.md`` in its folder, in the Hugging Face Hub's format (YAML metadata,
then Markdown), written with the model (``OUT/model``, ``OUT/best_model``).

What a user of the model needs and the run knows: the base model, the data it saw (the datasets, their stage and
sources as their manifests record them, rows trained and skipped), the recipe (the options that decide the result),
the evaluation against the starting model when the run evaluated, and how to load it with its prompts.
sentence-transformers' own card generator reads its trainer's callbacks and datasets, which this trainer does not
use, so the card is written here.
"""

from __future__ import annotations

import json
from pathlib import Path

from cmtp.schemas import CmtpError, Manifest

from .config import TrainConfig

RECIPE = ("stage", "max_steps", "epochs", "batch_size", "learning_rate", "temperature", "train_group_size",
          "cross_device", "gradcache_chunk", "query_max_len", "passage_max_len", "distill_weight", "freeze_embeddings",
          "warmup_ratio", "weight_decay", "precision", "seed")


def _lineage(path: str) -> dict | None:
    """The stage output a data path belongs to (the path or its parent holds ``manifest.json``)."""
    for folder in (path.rstrip("/"), path.rstrip("/").rsplit("/", 1)[0]):
        try:
            manifest = Manifest.read(folder)
        except (CmtpError, OSError, ValueError):
            continue
        return {"folder": folder, "stage": manifest.stage, "rows": manifest.count_out,
                "sources": {name: counts.get("out", 0) for name, counts in manifest.per_source.items()}}
    return None


def _yaml_list(values) -> str:
    return "".join(f"\n- {json.dumps(v, ensure_ascii=False)}" for v in values)


def model_card(config: TrainConfig, prompts: dict, samples: int, skipped: int, evaluation: dict | None,
               steps: int, note: str = "", pooling: str = "cls") -> str:
    """The card's text. ``evaluation``: the trainer's start-vs-final summary (``TrainingEval.summary``)."""
    rows = evaluation["rows"] if evaluation else []
    metrics = "".join(f"\n  - name: {r['task']} {r['metric']}\n    type: {r['metric'] or 'average'}\n"
                      f"    value: {100 * r['other']:.2f}" for r in rows if r["task"] != "average")
    lineage = {p: _lineage(p) for d in config.data for p in d.paths}
    sources = sorted({s for found in lineage.values() if found for s in found["sources"]})
    tags = ["sentence-transformers", "sentence-similarity", "cmtp", f"cmtp-{config.stage}"]
    header = (f"---\nbase_model: {json.dumps(config.model)}\nlibrary_name: sentence-transformers\nlanguage:\n- zh\n"
              f"pipeline_tag: sentence-similarity\ntags:{_yaml_list(tags)}\n"
              + (f"datasets:{_yaml_list(sources)}\n" if sources else "")
              + (f"model-index:\n- name: {json.dumps(Path(config.output_dir).name)}\n  results:\n  - task:\n"
                 "      type: sentence-similarity\n    dataset:\n      name: cmtp train --eval\n"
                 f"      type: cmtp-eval\n    metrics:{metrics}\n" if metrics else "") + "---\n")
    data_lines = []
    for source in config.data:
        for path in source.paths:
            found = lineage[path]
            origin = (f"the output of `cmtp {found['stage']}` ({found['rows']:,} rows; sources: "
                      + ", ".join(f"{name} {n:,}" for name, n in sorted(found["sources"].items())) + ")"
                      if found else "Parquet files")
            data_lines.append(f"| {source.name} | `{path}` | {source.weight:g} | {origin} |")
    m3_names = ("heads", "head_weights", "head_learning_rate", "self_distill") if config.m3_heads else ()
    recipe = "\n".join(f"| `{name}` | `{getattr(config, name)}` |" for name in (*RECIPE, *m3_names))
    if rows:
        table = "| task | metric | start | final | delta |\n|---|---|---|---|---|\n" + "\n".join(
            f"| {r['task']} | {r['metric']} | {100 * r['base']:.2f} | {100 * r['other']:.2f} | "
            f"{100 * r['delta']:+.2f} |" for r in rows)
        verdict = ("**The final model is worse than the model it started from on average: do not ship it as is.**"
                   if evaluation["worse_than_start"] else "The final model is at least as good as its start on "
                   "average" + (f" (worse on {', '.join(evaluation['tasks_worse'])})" if evaluation["tasks_worse"]
                                else "") + ".")
        evaluated = f"Evaluated by the trainer (`--eval`, `--eval-holdout`), scores x 100:\n\n{table}\n\n{verdict}"
    else:
        evaluated = ("This run did not evaluate (no `--eval` / `--eval-holdout`): evaluate it against its start with "
                     f"`cmtp eval MODEL --compare {config.model} --suite dev` before you use it.")
    query, passage = prompts.get("query", ""), prompts.get("passage", "")
    return f"""{header}
# {Path(config.output_dir).name}: a sentence embedding model trained with cmtp

Trained from `{config.model}` by `cmtp train --stage {config.stage}` ({steps:,} steps, {samples:,} samples;
{skipped:,} unusable rows skipped). {note}

## Data

| dataset | path | weight | what it is |
|---|---|---|---|
{chr(10).join(data_lines)}

Licences: the model inherits the terms of the corpora it was trained on ({', '.join(sources) or 'see the paths'});
cmtp records the source names, not their licences: check each dump's own terms before you publish the model.

## Recipe

| option | value |
|---|---|
{recipe}

## Evaluation

{evaluated}

## Usage

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("PATH_TO_THIS_FOLDER")
queries = model.encode(["长江有多长"], prompt_name="query")  # prompt {json.dumps(query, ensure_ascii=False)}
passages = model.encode(["长江全长6300公里。"], prompt_name="passage")  # {json.dumps(passage, ensure_ascii=False)}
print(model.similarity(queries, passages))
```

The prompts are saved with the model (`config_sentence_transformers.json`); symmetric tasks (STS, pair
classification, clustering) use the prompts saved under their mteb task-type names.
{_m3_usage(config, query, pooling) if config.m3_heads else ""}"""


def saved_pooling(folder: Path) -> str:
    """The pooling of a saved sentence-transformers folder, as FlagEmbedding names it ("cls" or "mean")."""
    try:
        modules = json.loads((Path(folder) / "modules.json").read_text(encoding="utf-8"))
        pooling = next(m for m in modules if m["type"].endswith("Pooling"))
        settings = json.loads((Path(folder) / pooling["path"] / "config.json").read_text(encoding="utf-8"))
    except (OSError, StopIteration, ValueError, KeyError):
        return "cls"
    return "cls" if settings.get("pooling_mode_cls_token") else "mean"


def _m3_usage(config: TrainConfig, query_prompt: str, pooling: str) -> str:
    return f"""
### BGE-M3 heads

Trained with `--heads {config.heads}`: `sparse_linear.pt` (lexical weights) and `colbert_linear.pt` (multi-vector)
lie beside the weights, where FlagEmbedding reads them. Dense vectors use this model's pooling:

```python
from FlagEmbedding import BGEM3FlagModel

model = BGEM3FlagModel("PATH_TO_THIS_FOLDER", pooling_method="{pooling}", use_fp16=False,
                       query_instruction_for_retrieval={json.dumps(query_prompt, ensure_ascii=False)})
out = model.encode(["长江全长6300公里。"], return_dense=True, return_sparse=True, return_colbert_vecs=True)
```

`cmtp eval PATH_TO_THIS_FOLDER --heads {config.heads} --suite dev` scores retrieval by each head and their hybrid.
"""


def write_model_card(folder: Path, config: TrainConfig, prompts: dict, samples: int, skipped: int,
                     evaluation: dict | None, steps: int, note: str = "") -> None:
    card = model_card(config, prompts, samples, skipped, evaluation, steps, note, saved_pooling(folder))
    (Path(folder) / "README.md").write_text(card, encoding="utf-8")
