"""``cmtp build FILE --ablate STAGE.OPTION=V1,V2``: which build makes the better model?

Each value makes a variant of the build: the changed stage and the stages after it that lead to the training data
run again under their own names (``mine-range-3-60``), in the same work folder, while every stage before the change
is shared with the build itself through its fingerprint (an ablation of mine's range re-runs neither extract, dedup
nor score). The data each variant makes for training (the data of the build's last training stage, or
``--ablate-data STAGE[/SUB]``) then goes through a proxy audit (``audit/proxy.py``): the same small student, the
same budget, the same evaluation and held-out slice, several seeds, every variant against the build's own choice,
with the same significance rule. Training examples are trained with their mined negatives; the build's own examples
also with in-batch negatives alone, so the table says what mining adds. The table and its verdict are printed and
added to the build's ``funnel.html``. A killed ablation resumes where it was: its builds by their fingerprints,
its proxy runs from their cache.

``STAGE.input=OTHER`` ablates a stage's input (``score.input=extract``: the build without dedup).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from cmtp.schemas import CmtpError

from .build import BuildFile, StagePlan

PROXY_FOLDER = "_ablate-proxy"


@dataclass(frozen=True)
class Variant:
    """One variant of the build: options changed in one or more stages (``changes[stage][option] = value``)."""
    label: str  # its row in the table (no "=": the proxy's inputs are NAME=PATH)
    slug: str  # the suffix of its renamed stages' folders
    changes: dict[str, dict[str, Any]]
    option: tuple[str, str] | None = None  # (stage, option) of a STAGE.OPTION=V1,V2 value


def parse_ablation(text: str, named: dict[str, dict] | None = None) -> list[Variant]:
    """``STAGE.OPTION=V1,V2,...`` (values read as YAML scalars: ``true``, ``0.9``, ``3-60``), one variant a value;
    or the NAME of a variant written in the build file's ``ablations:``."""
    import yaml

    named = named or {}
    if "=" not in text and text.strip() in named:
        name = text.strip()
        return [Variant(name, _slug(name), named[name])]
    target, sep, values = text.partition("=")
    stage, dot, option = target.partition(".")
    if not sep or not dot or not stage.strip() or not option.strip() or not values.strip():
        names = f"; the build file's ablations: {', '.join(named)}" if named else ""
        raise CmtpError(f"--ablate {text!r}: use STAGE.OPTION=V1,V2,... (e.g. mine.range=3-60,10-100) or the name of "
                        f"a variant under the build file's ablations:{names}")
    stage, option = stage.strip(), option.strip().replace("-", "_")
    return [Variant(f"{stage}.{option} {value}", _slug(f"{option}-{value}"), {stage: {option: value}}, (stage, option))
            for value in (yaml.safe_load(v) if v.strip() else "" for v in values.split(","))]


def _slug(text: str) -> str:
    return re.sub(r"[^\w-]+", "-", text).strip("-")


def _rename_refs(value: Any, names: dict[str, str]) -> Any:
    """``@STAGE[/sub]`` references (in any nesting) to renamed stages, renamed."""
    if isinstance(value, str) and value.startswith("@"):
        stage, slash, rest = value[1:].partition("/")
        return f"@{names.get(stage, stage)}{slash}{rest}" if stage in names else value
    if isinstance(value, list):
        return [_rename_refs(v, names) for v in value]
    if isinstance(value, dict):
        return {k: _rename_refs(v, names) for k, v in value.items()}
    return value


def training_data(build: BuildFile, given: str | None) -> tuple[str, str]:
    """(stage, subfolder) of the data the proxy trains on: ``--ablate-data``, else the data of the build's last
    training stage (a ``@STAGE[/sub]`` reference)."""
    if given:
        stage, _, sub = given.partition("/")
        if stage not in {s.name for s in build.stages}:
            raise CmtpError(f"--ablate-data {given}: no stage {stage!r} in the build file")
        return stage, sub
    for plan in reversed(build.stages):
        if plan.kind != "train":
            continue
        refs = [r for r in _data_refs(plan.options.get("data"))]
        if refs:
            stage, _, sub = refs[0][1:].partition("/")
            return stage, sub
    raise CmtpError("the build has no training stage reading another stage's data: name the data the proxy trains on "
                    "with --ablate-data STAGE[/SUB] (e.g. mine/examples)")


def _data_refs(value: Any) -> list[str]:
    if isinstance(value, str):
        text = value.split("=", 1)[-1] if not value.startswith("@") else value
        return [text.rsplit("@", 1)[0] if text.count("@") > 1 else text] if text.startswith("@") else []
    if isinstance(value, list):
        return [r for v in value for r in _data_refs(v)]
    if isinstance(value, dict):
        return _data_refs(value.get("paths"))
    return []


def variant(build: BuildFile, chosen: Variant, until: str) -> tuple[list[StagePlan], str]:
    """The stages of the build with ``chosen``'s changes, up to ``until``: each changed stage and every stage that
    reads one (directly or not) renamed, the others as they are (shared). Returns (stages, the name ``until`` has
    in the variant)."""
    names = [s.name for s in build.stages]
    for stage in chosen.changes:
        if stage not in names:
            raise CmtpError(f"--ablate {chosen.label}: no stage {stage!r}; stages: {', '.join(names)}")
        if names.index(stage) > names.index(until):
            raise CmtpError(f"--ablate {chosen.label}: {stage} runs after {until}, whose data the proxy trains on: it "
                            "cannot change that data")
    renamed: dict[str, str] = {}
    stages = []
    for plan in build.stages[: names.index(until) + 1]:
        plan = copy.deepcopy(plan)
        changes = chosen.changes.get(plan.name, {})
        if "input" in changes:  # a stage's input: STAGE.input=OTHER
            if changes["input"] not in names[: names.index(plan.name)]:
                raise CmtpError(f"--ablate {chosen.label}: {plan.name}'s input {changes['input']} is not a stage "
                                f"before {plan.name}")
            old = plan.options.get("input")
            plan.depends = [changes["input"]] + [d for d in plan.depends if d != old]
        if changes or set(plan.depends) & set(renamed):
            renamed[plan.name] = f"{plan.name}-{chosen.slug}"
        plan.options.update(changes)
        plan.options = _rename_refs(plan.options, renamed)
        if isinstance(plan.options.get("input"), str) and plan.options["input"] in renamed:
            plan.options["input"] = renamed[plan.options["input"]]
        plan.depends = [renamed.get(d, d) for d in plan.depends]
        plan.name = renamed.get(plan.name, plan.name)
        stages.append(plan)
    return stages, renamed.get(until, until)


def plan_variants(build: BuildFile, ablations: list[list[Variant]], until: str
                  ) -> tuple[str, list[tuple[str, BuildFile, str]]]:
    """(the label of the build's own row, [(label, the variant's build, the name its data stage has in it)]),
    checked; a value that is the build's own is left out."""
    variants: list[tuple[str, BuildFile, str]] = []
    base_label = "the build as written"
    if len(ablations) == 1 and ablations[0][0].option:  # one STAGE.OPTION=...: the build's own value names it
        stage, option = ablations[0][0].option
        base_value = next((s.options.get(option) for s in build.stages if s.name == stage), None)
        base_label = f"{stage}.{option} {base_value} (the build's)"
    for chosen in (v for variants_of_one in ablations for v in variants_of_one):
        stages, name = variant(build, chosen, until)
        if all(s.options.get(o) == v for s in build.stages for o, v in chosen.changes.get(s.name, {}).items()):
            continue  # the build's own
        variants.append((chosen.label, BuildFile(build.work, stages, build.beam_args, build.files), name))
    if not variants:
        raise CmtpError("every --ablate value is the build's own: give other values")
    return base_label, variants


def run_ablations(build: BuildFile, ablations: list[list[Variant]], data: str | None, seeds: int, overwrite: bool,
                  log, show_plan=lambda name, plans: None, proxy_options: dict | None = None) -> Any:
    """Every variant built (reusing what it shares; ``show_plan(name, plans)`` before each), then one proxy audit
    over their training data; returns the proxy report. ``proxy_options``: other ``ProxyConfig`` values (the proxy
    model, steps). The caller holds the work folder's lock."""
    from .audit.proxy import PRIOR_SAMPLES_PER_SECOND, ProxyConfig, run_proxy_audit
    from .audit.stats import open_scored
    from .build import execute, plan_build, validate

    until, sub = training_data(build, data)
    base_plans = plan_build(build, until=until)
    validate(build, base_plans)
    base_label, variants = plan_variants(build, ablations, until)
    scored = next((s.name for s in build.stages if s.kind == "score"), None)
    if scored is None:
        raise CmtpError("an ablation holds out scored pairs for its evaluation: the build needs a score stage")
    kept = sum(pq.ParquetFile(f).metadata.num_rows for f in sorted((build.work / scored / "kept").glob("*.parquet"))) \
        if (build.work / scored / "kept").is_dir() else None
    # the held-out slice: 500 scored pairs, or a fifth of a small corpus (the demo's 449)
    holdout = 500 if kept is None or kept >= 2500 else max(10, kept // 5)
    config = ProxyConfig(**{"holdout": holdout, **(proxy_options or {})}, cuts=False, seeds=seeds, twins=[base_label],
                         inputs=[f"{base_label}={_data_path(build.work, until, sub)}"]
                         + [f"{name}={_data_path(build.work, stage, sub)}" for name, _, stage in variants])
    runs = (len(variants) + 2) * seeds
    estimate = runs * (config.budget / PRIOR_SAMPLES_PER_SECOND + 25)
    log(f"ablation: {len(variants)} variant(s) and the build's own choice, each built up to {until} (shared stages "
        f"reused), then about {runs} proxy runs of {config.steps} steps x {config.batch_size} ({seeds} seeds): roughly "
        f"{estimate / 60:.0f} min of proxy training and evaluation plus the stages the variants run")
    for name, variant_build in [(base_label, build)] + [(n, b) for n, b, _ in variants]:
        plans = base_plans if variant_build is build else plan_build(variant_build)
        validate(variant_build, plans)
        show_plan(name, plans)
        execute(variant_build, plans, overwrite, log=log)
    dataset = open_scored([str(build.work / scored / "kept")])
    return run_proxy_audit(dataset, config, build.work / PROXY_FOLDER, log=log)


def _data_path(work: Path, stage: str, sub: str) -> str:
    return str(work / stage / sub) if sub else str(work / stage)


def write_report(build: BuildFile, report) -> Path:
    path = build.work / "ablation.json"
    path.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    return path
