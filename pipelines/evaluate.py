"""The eval stage: a model (and optionally a baseline) on evaluation tasks, into ``eval.json`` + manifest."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from cmtp.schemas import CmtpError, Manifest
from cmtp.schemas.ranges import check_ranges, option

from .stages import Stage, lazy_class, listed, runner_config_of


@dataclass
class EvalRunOptions:
    """What an evaluation reads, besides its model: the runner's options of ``cmtp eval`` and of a build's eval
    stage (how it evaluates is ``EvalOptions``)."""

    model: str | None = None  # the model evaluated (cmtp eval's MODEL argument)
    tasks: list[str] = option(help="task folder, folder of tasks, or tasks YAML (repeatable)", factory=list)
    suite: str | None = option(None, "a named set of tasks: dev")
    compare: str | None = option(None, "a second model, evaluated on the same tasks")
    max_per_task: int | None = option(None, "seeded subsample: at most N rows / queries per task", ge=1)

    def __post_init__(self):
        check_ranges(self)


RUNNER_OPTIONS = tuple(f.name for f in fields(EvalRunOptions))


def eval_task_paths(tasks=(), suite: str | None = None) -> list[str]:
    """The task paths an eval reads: ``tasks`` and the named ``suite``."""
    return list(tasks or []) + ([f"suite:{suite}"] if suite else [])


def _options(values: dict) -> dict:
    """``instruction: bge`` is BGE's Chinese retrieval instruction."""
    if values.get("instruction") == "bge":
        from cmtp.transforms.embedding.prompts import BGE_ZH_INSTRUCTION

        values["instruction"] = BGE_ZH_INSTRUCTION
    return values


def _run_stage(inputs, out, config, beam_args, **run_options):
    from cmtp.trainer.evaluation import evaluate_with_baseline, load_tasks

    run = runner_config_of(EvalRunOptions, run_options)
    paths = eval_task_paths(run.tasks, run.suite)
    if not run.model or not paths:
        raise CmtpError("an eval stage needs model: and tasks: or suite:")
    loaded = load_tasks(paths, run.max_per_task, config.seed)
    report, base, record = evaluate_with_baseline(run.model, loaded, config, run.compare)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "eval.json").write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
    # like every stage: items read, evaluated and skipped (rows a task file could not use), and the result
    skipped = sum(t.skipped_rows for t in loaded)
    evaluated = sum(t.size() for t in loaded)
    manifest = Manifest(
        stage="eval", config={**asdict(config), "model": run.model, "compare": run.compare, "tasks": paths,
                              "max_per_task": run.max_per_task},
        inputs=paths, outputs={"eval": {"path": str(Path(out) / "eval.json"), "files": 1, "rows": len(loaded),
                                        "schema": "eval"}},
        count_in=evaluated + skipped, count_out=evaluated,
        dropped={"unusable_row": skipped} if skipped else {},
        extra={"average": report.average, "baseline": base.model if base else None,
               "baseline_average": base.average if base else None,
               "delta": report.average - base.average if base else None,
               "seconds": round(report.seconds + (base.seconds if base else 0.0), 2),
               "texts_per_second": report.texts_per_second()},
    )
    manifest.write(out)
    return manifest


def _note(m: Manifest) -> str:
    e = m.extra
    delta = f" ({100 * e['delta']:+.2f} vs {e['baseline']})" if e.get("delta") is not None else ""
    return f"average {100 * e['average']:.2f}{delta}"


STAGE = Stage("eval", lazy_class("cmtp.trainer.evaluation", "EvalOptions"), ("eval.json",), _run_stage,
              runner_options=RUNNER_OPTIONS, runner_config=lambda: EvalRunOptions, normalize=_options, inputs="none",
              external_inputs=lambda options: listed(options.get("tasks"), "tasks"), note=_note)
