"""``cmtp build``: run the whole chain from one YAML file, reusing every stage whose inputs did not change."""

from __future__ import annotations

import typer
from rich.table import Table

from cmtp.schemas.errors import CmtpError

from ..console import err, out
from .common import split_beam_args

HELP = """Run the pipeline a YAML file describes (extract, dedup, score, mine, train stages, eval), each stage
with the options of its own --config. A stage whose fingerprint (its options, the stages it reads, the files
it reads, the cmtp version) matches its last finished run is reused; after a change or a crash the build
resumes at the first stage that changed or did not finish. Each stage is written to a temporary folder and
moved into place only when it succeeded. At the end: rows at every stage and drops by reason (also as
WORK/funnel.html). Beam arguments after `--` reach every Beam stage. Relative paths in the file are relative to
the folder cmtp runs in.

Examples:

  cmtp build examples/pipeline.yaml

  cmtp build pipeline.yaml --dry-run

  cmtp build pipeline.yaml --from score --until mine

  cmtp build pipeline.yaml -- --runner DataflowRunner --project P --region us-central1 --temp_location gs://B/tmp

  cmtp build examples/pipeline.yaml --ablate mine.range=3-60,10-100

  cmtp build pipeline.yaml --ablate score.input=extract --ablate score.target_keep_rate=0.6,0.9 --ablate-seeds 3

--ablate STAGE.OPTION=V1,V2 (repeatable) builds a variant of the pipeline for each value (the changed stage and
what reads it, under their own names; the stages before it are shared), --ablate NAME the variant the build file
names under ablations: (NAME: {STAGE: {OPTION: VALUE}}, several options at once), each up to the data the last
training stage reads (or --ablate-data STAGE/SUB); then it trains the same small proxy student on each variant's
data and on the build's own, and prints which variant trains a better model, within the seed-to-seed noise (also
in WORK/ablation.json and WORK/funnel.html).
"""


def build(
    ctx: typer.Context,
    args: list[str] = typer.Argument(..., help="the pipeline YAML file (then Beam args after --)"),
    work: str = typer.Option(None, help="where stage outputs go (default: the file's work:)"),
    start: str = typer.Option(None, "--from", help="run this stage and every later one, changed or not"),
    until: str = typer.Option(None, help="stop after this stage"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan (what runs, what is reused, why) only"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace stage folders not written by cmtp build"),
    ablate: list[str] = typer.Option(None, help="STAGE.OPTION=V1,V2,... or the NAME of a variant under the "
                                                "build file's ablations: compare the build with each (repeatable; "
                                                "see above)"),
    ablate_data: str = typer.Option(None, help="STAGE/SUB the ablation's proxy trains on (default: the data of the "
                                               "last training stage)"),
    ablate_seeds: int = typer.Option(3, min=1, help="proxy seeds per ablation variant"),
) -> None:
    from ..build import execute, load_build_file

    files, beam_args = split_beam_args(args, ctx.args)
    if len(files) != 1:
        raise CmtpError(f"give exactly one pipeline file, got {len(files)}")
    spec = load_build_file(files[0], work)
    spec.beam_args = beam_args or spec.beam_args
    if ablate:
        _ablate(spec, ablate, ablate_data, ablate_seeds, overwrite, dry_run)
        return
    if ablate_data:
        raise CmtpError("--ablate-data needs --ablate")
    if dry_run:
        _plan(spec, start, until)
        return
    from ..build import validate
    from ..locking import hold

    validate(spec, spec.stages)  # before the work folder is created or locked

    with hold(spec.work, own=True, log=lambda line: err.print(line)):
        plans = _plan(spec, start, until)
        if all(p.action == "reuse" for p in plans):
            out.print("nothing to run: every stage is up to date")
        execute(spec, plans, overwrite, log=lambda line: err.print(line))
    _report(spec, plans)


def _plan(spec, start, until):
    from ..build import plan_build, validate

    plans = plan_build(spec, start, until)
    validate(spec, plans)
    _plan_table(plans, f"plan for {spec.work}")
    return plans


def _plan_table(plans, title: str) -> None:
    table = Table(title=title)
    for column in ["stage", "kind", "action", "why"]:
        table.add_column(column)
    for p in plans:
        table.add_row(p.name, p.kind, p.action, p.reason, style="green" if p.action == "reuse" else None)
    out.print(table)


def _ablate(spec, texts: list[str], data: str | None, seeds: int, overwrite: bool, dry_run: bool) -> None:
    from ..ablate import parse_ablation, plan_variants, run_ablations, training_data, write_report
    from ..audit.proxy_report import proxy_html, proxy_table
    from ..build import plan_build, validate
    from ..locking import hold

    ablations = [parse_ablation(text, spec.ablations) for text in texts]
    until, _ = training_data(spec, data)
    _, variants = plan_variants(spec, ablations, until)  # every variant checked before any work, --dry-run too
    if dry_run:
        _plan(spec, None, until)
        for name, variant_build, _ in variants:
            plans = plan_build(variant_build)
            validate(variant_build, plans)
            _plan_table(plans, f"plan of {name}")
        return
    validate(spec, spec.stages)
    with hold(spec.work, own=True, log=lambda line: err.print(line)):
        report = run_ablations(spec, ablations, data, seeds, overwrite,
                               log=lambda line: err.print(line, markup=False, highlight=False),
                               show_plan=lambda name, plans: _plan_table(plans, f"plan of {name}"))
        path = write_report(spec, report)
    out.print(proxy_table(report))
    out.print(f"verdict: {report.verdict()}", highlight=False)
    _report(spec, plan_build(spec, until=until), proxy_html(report))
    out.print(f"ablation: {path}")


def _report(spec, plans, extra_html: str = "") -> None:
    from ..build import funnel, write_funnel_html

    rows = funnel(spec, plans)
    if rows:
        summary = Table(title="funnel: rows at every stage")
        for column in ["stage", "in", "out", "dropped by reason", "result"]:
            summary.add_column(column, justify="right" if column in ("in", "out") else "left")
        for r in rows:
            summary.add_row(r["stage"], f"{r['in']:,}", f"{r['out']:,}",
                            ", ".join(f"{k}={v:,}" for k, v in r["dropped"].items()), r["note"])
        out.print(summary)
        write_funnel_html(rows, spec.work / "funnel.html", extra_html)
        out.print(f"funnel page: {spec.work / 'funnel.html'}")
    for plan in plans:
        if plan.kind == "eval" and (spec.work / plan.name / "eval.json").exists():
            _print_eval(plan.name, spec.work / plan.name / "eval.json")


def _print_eval(name: str, path) -> None:
    import json

    from .eval_cmd import print_record_table

    record = json.loads(path.read_text(encoding="utf-8"))
    baseline = f" against {record['compare']['baseline']}" if "compare" in record else ""
    print_record_table(record, f"{name}: {record['results']['model']}{baseline}")
