"""``cmtp eval``: C-MTEB-style evaluation of an embedding model on local task folders, with comparisons."""

from __future__ import annotations

import json
from enum import StrEnum

import typer
from rich.table import Table

from cmtp.schemas.errors import CmtpError
from cmtp.trainer.evaluation import EvalOptions
from cmtp.transforms.embedding.prompts import BGE_ZH_INSTRUCTION

from ..console import err, out
from ..evaluate import EvalRunOptions
from .common import ConfigFile, stage_options
from .options import config_options

HELP = """Evaluate an embedding model on STS, pair-classification, retrieval, reranking, classification and
clustering tasks read from local files (C-MTEB conventions: cosine Spearman, AP, nDCG@10, MAP, accuracy,
V-measure; scores shown x 100).

--tasks takes a task folder (task.yaml, or a BEIR folder), a folder of them, or a YAML file listing tasks;
--suite dev is the sets bundled in examples/eval (STS-B, CMRC2018 retrieval, a labeled reranking set).

Examples:

  cmtp eval builtin:me5-small --suite dev

  cmtp eval work/stage3/model --compare builtin:me5-small --suite dev --max-per-task 300

  cmtp eval /models/bge-base-zh --tasks my-tasks/ --instruction bge --format json --output results.json
"""


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


HEAD_COLUMNS = ("sparse", "multivector", "hybrid")  # BGE-M3 heads scored besides dense (--heads)


def _head_scores(task: dict) -> dict[str, float]:
    """A retrieval task's main metric by each BGE-M3 head besides dense (``sparse_ndcg_at_10`` ...)."""
    return {h: task["metrics"][f"{h}_{task['main_metric']}"] for h in HEAD_COLUMNS
            if f"{h}_{task['main_metric']}" in task.get("metrics", {})}


def record_table(record: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of an evaluation record (``evaluate_with_baseline``): the scores, or with a baseline
    both models' scores and delta = model - baseline. ``cmtp eval`` and ``cmtp build`` print it the same way.
    Tasks scored by BGE-M3 heads (``--heads``) get a column per head, or with a baseline a row per head."""
    results = record["results"]
    if "compare" in record:
        header = ["task", "metric", record["compare"]["baseline"], results["model"], "delta"]
        rows = [[r["task"], r["metric"], _pct(r["base"]), _pct(r["other"]), f"{100 * r['delta']:+.2f}"]
                for r in record["compare"]["rows"]]
        base = {t["name"]: t for t in record["compare"]["results"]["tasks"]}
        extra = [[t["name"], f"{head} {t['main_metric']}", _pct(theirs[head]), _pct(score),
                  f"{100 * (score - theirs[head]):+.2f}"]
                 for t in results["tasks"] if t["name"] in base
                 for theirs in [_head_scores(base[t["name"]])]
                 for head, score in _head_scores(t).items() if head in theirs]
        return header, (rows[:-1] + extra + rows[-1:]) if rows else extra
    heads = [h for h in HEAD_COLUMNS if any(h in _head_scores(t) for t in results["tasks"])]
    rows = [[t["name"], t["type"], t["main_metric"], _pct(t["main_score"])]
            + [_pct(_head_scores(t)[h]) if h in _head_scores(t) else "" for h in heads] + [str(t["size"])]
            for t in results["tasks"]]
    average = ["average", "", "", _pct(results["average"])] + [""] * len(heads) + [""]
    return ["task", "type", "metric", results["model"] + (" (dense)" if heads else "")] + heads + ["n"], \
        rows + [average]


def print_record_table(record: dict, title: str) -> None:
    header, rows = record_table(record)
    table = Table(title=title)
    for column in header:
        table.add_column(column, justify="left" if column in ("task", "type", "metric") else "right")
    for row in rows:
        table.add_row(*row)
    out.print(table)


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


@config_options(EvalRunOptions, EvalOptions)
def eval_model(
    model: str = typer.Argument(..., help="model: builtin:NAME, a local sentence-transformers folder, or a hub id"),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table, json or markdown"),
    output: str = typer.Option(None, help="also write the full JSON results here"),
    config_file: ConfigFile = None,
    instruction: str = typer.Option(None, help="instruction for retrieval/reranking queries; 'bge' = "
                                    + BGE_ZH_INSTRUCTION),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    **flags,
) -> None:
    from cmtp.trainer.evaluation import evaluate_with_baseline, load_tasks

    from ..evaluate import eval_task_paths
    from ..stages import STAGES, prepare, runner_config_of

    flags.update(tasks=list(flags["tasks"]) if flags["tasks"] else None, instruction=instruction, progress=not quiet)
    options, extras = prepare(STAGES["eval"], stage_options(config_file, flags))  # the build's eval stage's rule
    run = runner_config_of(EvalRunOptions, extras)
    paths = eval_task_paths(run.tasks, run.suite)
    if not paths:
        raise CmtpError("give --tasks PATH or --suite NAME")
    if output:
        from ..outputs import check_writable

        check_writable(output, "--output")  # before minutes of evaluation, not after
    loaded = load_tasks(paths, run.max_per_task, options.seed)
    for task in loaded:
        if task.skipped_rows:
            err.print(f"{task.name}: {task.skipped_rows} rows without a usable label skipped")
    report, _, record = evaluate_with_baseline(model, loaded, options, run.compare)
    result = {"tasks_from": paths, "max_per_task": run.max_per_task, **record}
    if output:
        from ..outputs import write_file

        write_file(output, json.dumps(result, indent=2, ensure_ascii=False))  # local, or a store
    if fmt is OutputFormat.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    elif fmt is OutputFormat.markdown:
        print(_markdown(*record_table(result)))
    else:
        print_record_table(result, f"cmtp eval ({len(loaded)} tasks, {report.texts_per_second():.0f} texts/s)")
