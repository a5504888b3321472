"""``cmtp build``: the whole chain from one YAML file, re-running only what changed.

    work: work                      # stage outputs go to work/STAGE
    stages:
      extract: {sources: ["wudao=dumps/wudao/*.json", "csl=dumps/csl/*.tsv"], workers: 2}
      dedup: {input: extract, threshold: 0.8}
      score: {input: dedup, model: builtin:me5-small, target_keep_rate: 0.8}
      mine: {input: score, negatives: 7}
      stage2: {kind: train, stage: contrastive, data: ["@score/kept"], max_steps: 100}
      stage3: {kind: train, stage: finetune, model: "@stage2", data: ["@mine/examples"]}
      eval: {kind: eval, model: "@stage3", compare: builtin:me5-small, suite: dev}

A stage's ``kind`` defaults to its name; ``input: STAGE`` and ``@STAGE[/sub]`` values refer to other stages'
outputs (``@STAGE`` as a model is its ``model/`` folder). Every other option is the stage's own, as in its
``--config`` file. Each stage runs into ``work/.STAGE.tmp`` and is moved to ``work/STAGE`` only when it
succeeded, with ``_build.json`` holding its fingerprint: a hash of its kind and options, the fingerprints of the
stages it reads, the files it reads from outside (path, size, modification time) and the cmtp version. A
stage whose fingerprint matches is reused; the first stage that changed or never finished runs again, and so
does everything after it that reads it. Relative paths in the file (``work``, sources, data, tasks) are relative to
the folder cmtp runs in, as on the command line.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmtp.schemas import CmtpError, Manifest
from cmtp.schemas.manifest import cmtp_version
from cmtp.schemas.yaml_files import load_yaml

from .stages import STAGES

BUILD_FILE = "_build.json"
TOP_LEVEL_KEYS = ("work", "stages", "beam_args", "ablations")


@dataclass
class StagePlan:
    name: str
    kind: str
    options: dict[str, Any]
    depends: list[str]
    fingerprint: str = ""
    action: str = ""  # run | reuse
    reason: str = ""


@dataclass
class BuildFile:
    work: Path
    stages: list[StagePlan]
    beam_args: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # the build file itself
    ablations: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # NAME -> stage -> option -> value


def _refs(value: Any) -> list[str]:
    """Stage names referred to by ``@STAGE[/sub]`` strings anywhere in an option value."""
    if isinstance(value, str) and value.startswith("@"):
        return [value[1:].split("/", 1)[0]]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    if isinstance(value, dict):
        return [r for v in value.values() for r in _refs(v)]
    return []


def _normalized(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options as the stage reads them, its sugar undone (train's ``NAME=PATH@WEIGHT`` data as mappings), so
    that ``@STAGE`` references are found and resolved in every form the stage accepts."""
    stage = STAGES[kind]
    return stage.normalize(dict(options)) if stage.normalize else dict(options)


def load_build_file(path: str, work: str | None = None) -> BuildFile:
    try:
        data = load_yaml(Path(path).read_text(encoding="utf-8"), path)
    except OSError as exc:
        raise CmtpError(f"{path}: {exc.strerror or exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("stages"), dict) or not data["stages"]:
        raise CmtpError(f"{path}: needs a stages: mapping of NAME: {{options}} (see cmtp build --help)")
    if unknown := sorted(set(map(str, data)) - set(TOP_LEVEL_KEYS)):  # "wrok:" wrote to ./work without a word
        import difflib

        hints = [f"{u} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(u, TOP_LEVEL_KEYS, 1))
                 else u for u in unknown]
        raise CmtpError(f"{path}: unknown top-level key(s) {', '.join(hints)}; a build file has "
                        f"{', '.join(TOP_LEVEL_KEYS)}")
    stages = []
    for name, options in data["stages"].items():
        if not re.fullmatch(r"[\w-]+", str(name)):  # ".." or "/abs" made the stage's folder one outside work
            raise CmtpError(f"{path}: stage name {name!r}: use letters, digits, _ and - (it names a folder in work)")
        if options is not None and not isinstance(options, dict):
            raise CmtpError(f"{path}: stage {name!r} must be a mapping of options, not {type(options).__name__}")
        options = dict(options or {})
        kind = options.pop("kind", name)
        if kind not in STAGES:
            raise CmtpError(f"{path}: stage {name!r} has kind {kind!r}; kinds: {', '.join(STAGES)}")
        if "input" in options and STAGES[kind].inputs == "none":
            raise CmtpError(f"{path}: stage {name!r} ({kind}) reads no input stage; remove its input:")
        if str(options.get("input", "")).startswith("@"):
            raise CmtpError(f"{path}: stage {name!r}: input: takes a stage name ({options['input'][1:]}), "
                            f"not {options['input']}")
        try:
            read = _normalized(kind, options)
        except CmtpError as exc:
            raise CmtpError(f"stage {name}: {exc}") from None  # as the checks of validate() say it
        depends = ([options["input"]] if "input" in options else []) + _refs(read)
        known = {s.name: s.kind for s in stages}
        for dep in depends:
            if dep not in known:
                raise CmtpError(f"{path}: stage {name!r} reads {dep!r}, which is not a stage defined before it")
        try:
            STAGES[kind].check_refs(read, {dep: STAGES[known[dep]] for dep in depends})
        except CmtpError as exc:
            raise CmtpError(f"stage {name}: {exc}") from None  # as the checks of validate() say it
        for key in ("model", "compare"):  # @STAGE as a model is that stage's model/ folder: a training stage's
            ref = options.get(key)
            if isinstance(ref, str) and ref.startswith("@") and "/" not in ref and known.get(ref[1:]) != "train":
                raise CmtpError(f"{path}: stage {name!r}: {key}: {ref} is not a training stage, so it makes no "
                                "model")
        stages.append(StagePlan(str(name), kind, options, list(dict.fromkeys(depends))))
    beam_args = data.get("beam_args") or []
    if isinstance(beam_args, str):  # beam_args: --runner DataflowRunner --project P, as on a command line
        import shlex

        beam_args = shlex.split(beam_args)
    if not isinstance(beam_args, list):
        raise CmtpError(f"{path}: beam_args must be a list of Beam flags (or one string of them)")
    work = work or ("work" if data.get("work") is None else data["work"])
    if isinstance(work, bool) or not isinstance(work, str | int) or work == "":  # work: 5 is the folder 5
        raise CmtpError(f"{path}: work must be a folder path, not {work!r}")
    return BuildFile(Path(str(work)), stages, [str(a) for a in beam_args], [str(path)],
                     _ablations(path, data.get("ablations"), [s.name for s in stages]))


def _ablations(path: str, value: Any, stages: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """The build file's named variants for ``--ablate NAME``: ``ablations: {NAME: {STAGE: {OPTION: VALUE}}}``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CmtpError(f"{path}: ablations must map a variant's name to its changes, e.g. "
                        "ablations: {no-dedup: {score: {input: extract}}}")
    for name, changes in value.items():
        if not re.fullmatch(r"[\w-]+", str(name)):
            raise CmtpError(f"{path}: ablation name {name!r}: use letters, digits, _ and - (it names folders in work)")
        if not isinstance(changes, dict) or not changes or not all(isinstance(c, dict) and c for c in changes.values()):
            raise CmtpError(f"{path}: ablation {name!r} must map stages to the options it changes, e.g. "
                            "{dedup: {threshold: 0.7}}")
        if unknown := [s for s in changes if s not in stages]:
            raise CmtpError(f"{path}: ablation {name!r} changes {', '.join(map(str, unknown))}, not a stage of the "
                            f"build; stages: {', '.join(stages)}")
    return {str(n): {str(s): {str(o).replace("-", "_"): v for o, v in c.items()} for s, c in ch.items()}
            for n, ch in value.items()}


# -- fingerprints ----------------------------------------------------------------------------------------------
def external_inputs(plan: StagePlan) -> list[str]:
    """Paths or globs a stage reads from outside the build, as the stage declares them (``@STAGE`` references
    and built-in suites are the build's own), and the files of a local model folder it names as ``model`` or
    ``compare`` (weights retrained at the same path re-run it; built-in and hub models are named by version)."""
    try:
        paths = STAGES[plan.kind].external_inputs(plan.options)
    except CmtpError as exc:
        raise CmtpError(f"stage {plan.name}: {exc}") from None
    models = [plan.options.get(key) for key in ("model", "compare")]
    paths += [f"{m.rstrip('/')}/*" for m in models if isinstance(m, str) and not m.startswith(("builtin:", "@"))
              and Path(m).expanduser().is_dir()]
    return [p for p in paths if isinstance(p, str) and p and not p.startswith(("@", "suite:"))]


def check_external_inputs(plan: StagePlan) -> None:
    """Local inputs must match a file before anything runs (object-store paths are the stage's to check:
    listing them may need credentials only the workers have)."""
    from .outputs import match_files

    for pattern in external_inputs(plan):
        if "://" in pattern or Path(pattern).is_dir():
            continue
        try:
            match_files(pattern)
        except CmtpError:
            raise CmtpError(f"stage {plan.name}: input {pattern} matches no file") from None


def _external_files(plan: StagePlan) -> list[str]:
    """Path, size and time of every file the stage reads from outside the build (part of its fingerprint)."""
    from apache_beam.io.filesystems import FileSystems

    from cmtp.transforms.common.paths import beam_pattern

    described = []
    for pattern in external_inputs(plan):
        try:
            for result in FileSystems.match([beam_pattern(pattern)]):
                described += [f"{m.path}:{m.size_in_bytes}:{m.last_updated_in_seconds}" for m in result.metadata_list]
        except Exception:  # an unmatched pattern is the stage's own error to report
            described.append(f"{pattern}:missing")
    return sorted(described)


def fingerprint(plan: StagePlan, upstream: dict[str, str], beam_args: list[str]) -> str:
    """Options the stage declares output-invariant (worker counts: outputs are byte-identical for any, tested per
    stage) are left out, so changing them re-runs nothing; Beam flags count for the stages that run Beam."""
    stage = STAGES[plan.kind]
    options = {k: v for k, v in plan.options.items() if k not in stage.output_invariant}
    record = {"kind": plan.kind, "options": options, "inputs": {d: upstream[d] for d in plan.depends},
              "files": _external_files(plan), "cmtp": cmtp_version(), "beam_args": beam_args if stage.beam else []}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


def plan_build(build: BuildFile, start: str | None = None, until: str | None = None) -> list[StagePlan]:
    names = [s.name for s in build.stages]
    for flag, value in (("--from", start), ("--until", until)):
        if value is not None and value not in names:
            raise CmtpError(f"{flag} {value!r}: no such stage; stages: {', '.join(names)}")
    last = names.index(until) if until else len(names) - 1
    if start is not None and names.index(start) > last:  # it planned the stages up to --until, none from --from
        raise CmtpError(f"--from {start} comes after --until {until} in the build file")
    plans, prints, changed = [], {}, set()
    for i, plan in enumerate(build.stages[: last + 1]):
        plan.fingerprint = prints[plan.name] = fingerprint(plan, prints, build.beam_args)
        record = build.work / plan.name / BUILD_FILE
        previous = json.loads(record.read_text()) if record.exists() else None
        if start is not None and i >= names.index(start):
            plan.action, plan.reason = "run", f"--from {start}"
        elif previous is None:
            plan.action, plan.reason = "run", "no finished output" if not (build.work / plan.name).exists() \
                else "output not made by a finished build"
        elif previous.get("fingerprint") != plan.fingerprint:
            why = "an input stage changed" if set(plan.depends) & changed else "its options or input files changed"
            plan.action, plan.reason = "run", why
        elif problem := _damaged(build.work / plan.name, previous.get("files")):
            plan.action, plan.reason = "run", problem
        else:
            plan.action, plan.reason = "reuse", "fingerprint and files match"
        if plan.action == "run":
            changed.add(plan.name)
        plans.append(plan)
    return plans


def output_files(folder: Path) -> dict[str, list]:
    """[size, sha256] of every file a finished stage left in ``folder`` (``_build.json`` and hidden files apart),
    recorded at commit so that a later build reuses the stage only if its output is still what it wrote."""
    files = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or rel.name == BUILD_FILE or any(part.startswith(".") for part in rel.parts):
            continue
        with open(path, "rb") as fh:
            files[str(rel)] = [path.stat().st_size, hashlib.file_digest(fh, "sha256").hexdigest()]
    return files


def _damaged(folder: Path, recorded: dict | None) -> str:
    """Why a finished stage's output cannot be reused (a file missing, resized or rewritten), or ''."""
    if recorded is None:
        return "output not verifiable (written by an older cmtp)"
    now = output_files(folder)
    for name, (size, digest) in recorded.items():
        if name not in now:
            return f"output file {name} is missing"
        if now[name][0] != size or now[name][1] != digest:
            return f"output file {name} changed since it was written"
    if added := sorted(set(now) - set(recorded)):  # the next stage would read it: rows no manifest lists
        return f"output file {added[0]} was not written by the stage"
    return ""


# -- running stages --------------------------------------------------------------------------------------------
def _resolve(value: Any, work: Path, as_model: bool = False) -> Any:
    if isinstance(value, str) and value.startswith("@"):
        name, _, sub = value[1:].partition("/")
        path = work / name / sub if sub else work / name
        return str(path / "model") if as_model and not sub else str(path)
    if isinstance(value, list):
        return [_resolve(v, work) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, work) for k, v in value.items()}
    return value


def _resolved_options(plan: StagePlan, work: Path) -> dict[str, Any]:
    """The stage's options with ``@STAGE`` references as paths (``model`` and ``compare``: the model folder)."""
    options = _normalized(plan.kind, plan.options)
    return {k: _resolve(v, work, as_model=(k in ("model", "compare"))) for k, v in options.items()}


def run_planned_stage(plan: StagePlan, work: Path, out: Path, beam_args: list[str]) -> None:
    """The stage through the one stage runner (pipelines/stages.py), its ``@STAGE`` references resolved."""
    from .stages import run_stage as run

    options = _resolved_options(plan, work)
    inputs = [str(work / options.pop("input"))] if "input" in options else []
    try:
        run(STAGES[plan.kind], inputs, str(out), options, beam_args, overwrite=True)
    except CmtpError as exc:
        raise CmtpError(f"stage {plan.name}: {exc}") from exc


def validate(build: BuildFile, plans: list[StagePlan]) -> None:
    """Every stage's options turned into its config before the first stage runs (unknown names, wrong types,
    values out of range, a device this machine lacks), so a typo in the last stage is not found after hours of the
    first ones."""
    from .beam_runner import beam_options
    from .outputs import refuse_inputs_inside
    from .stages import check_device, prepare

    beam_options(build.beam_args)  # a Beam flag whose value Beam's parser refuses
    for plan in plans:
        check_external_inputs(plan)
        try:  # sources: b/** with work: b/work read the build's lock, markers and outputs, and grew every run
            refuse_inputs_inside(external_inputs(plan), [str(build.work)], f"the build's work folder {build.work} or "
                                 "its build file", tuple(build.files))
        except CmtpError as exc:
            raise CmtpError(f"stage {plan.name}: {exc}") from None
        options = _resolved_options(plan, build.work)
        options.pop("input", None)
        try:
            check_device(prepare(STAGES[plan.kind], options)[0], build.beam_args)
        except CmtpError as exc:
            raise CmtpError(f"stage {plan.name}: {exc}") from None


def execute(build: BuildFile, plans: list[StagePlan], overwrite: bool = False, log=print) -> list[dict]:
    """Run the stages the plan says to run; returns one record per stage (action, seconds)."""
    build.work.mkdir(parents=True, exist_ok=True)
    records = []
    for plan in plans:
        final, running = build.work / plan.name, build.work / f".{plan.name}.running"
        if plan.action == "reuse":  # the plan's table has said so
            records.append({"stage": plan.name, "action": "reuse", "seconds": 0.0})
            continue
        if final.exists() and not (final / BUILD_FILE).exists() and not running.exists():
            if not overwrite:
                raise CmtpError(f"{final} exists and was not written by cmtp build: move it away or pass --overwrite")
            shutil.rmtree(final)  # the build's stage folders are its own: a foreign one is replaced whole
        elif (final / BUILD_FILE).exists() and \
                json.loads((final / BUILD_FILE).read_text(encoding="utf-8")).get("kind") != plan.kind:
            shutil.rmtree(final)  # this build's folder, made by a stage of another kind (the runner would refuse it)
        elif running.exists() and final.exists() and running.read_text(encoding="utf-8") != plan.fingerprint:
            shutil.rmtree(final)  # an unfinished run of other options (its checkpoints belong to another run)
        log(f"{plan.name}: running {plan.kind} ({plan.reason})")
        # the runner commits a stage's output only when it succeeded; ``running`` marks a folder this build
        # owns while a stage that works in place (training, resuming from its checkpoints) has not finished
        running.write_text(plan.fingerprint, encoding="utf-8")
        (final / BUILD_FILE).unlink(missing_ok=True)
        started = time.perf_counter()
        try:
            run_planned_stage(plan, build.work, final, build.beam_args)
        except BaseException:
            if not final.exists():  # nothing committed: no marker either (a resumable training folder keeps it)
                running.unlink(missing_ok=True)
            raise
        seconds = time.perf_counter() - started
        (final / BUILD_FILE).write_text(json.dumps({"stage": plan.name, "kind": plan.kind,
                                                    "fingerprint": plan.fingerprint, "seconds": round(seconds, 2),
                                                    "options": plan.options, "files": output_files(final)},
                                                   indent=2, default=str, ensure_ascii=False), encoding="utf-8")
        running.unlink()
        records.append({"stage": plan.name, "action": "run", "seconds": round(seconds, 2)})
    return records


# -- the funnel ------------------------------------------------------------------------------------------------
def funnel(build: BuildFile, plans: list[StagePlan]) -> list[dict]:
    """Rows in and out of every stage and its drops by reason, read from the manifests; a training stage's rows
    are the samples it read and trained on, an eval stage's the items it evaluated; ``note`` says what the
    stage made of them (steps and loss, the average and its delta against the baseline)."""
    rows = []
    for plan in plans:
        path = build.work / plan.name / "manifest.json"
        if not path.exists():
            continue
        m = Manifest.read(str(path))
        rows.append({"stage": plan.name, "kind": plan.kind, "in": m.count_in, "out": m.count_out,
                     "dropped": dict(sorted(m.dropped.items(), key=lambda kv: -kv[1])),
                     "note": STAGES[plan.kind].note(m)})
    return rows


def write_funnel_html(rows: list[dict], path: Path, extra: str = "") -> None:
    """One self-contained page: a bar per stage (rows out, with the rows in as the outline) and the drops; ``extra``
    (an ablation's table and plot) after them."""
    import html

    width, bar_h, gap, left = 720, 26, 14, 120
    top = max([r["in"] for r in rows] + [1])
    bars = []
    for i, r in enumerate(rows):
        y = i * (bar_h + gap) + 10
        w_in, w_out = (width - left - 80) * r["in"] / top, (width - left - 80) * r["out"] / top
        bars.append(f'<text x="0" y="{y + 18}" font-size="14">{html.escape(r["stage"])}</text>'
                    f'<rect x="{left}" y="{y}" width="{w_in:.1f}" height="{bar_h}" fill="#e8eef7" stroke="#7a9cc6"/>'
                    f'<rect x="{left}" y="{y}" width="{w_out:.1f}" height="{bar_h}" fill="#3b6fb6"/>'
                    f'<text x="{left + w_in + 6:.1f}" y="{y + 18}" font-size="13">{r["out"]:,} / {r["in"]:,}</text>')
    height = len(rows) * (bar_h + gap) + 20
    table = "".join(
        f"<tr><td>{html.escape(r['stage'])}</td><td>{r['in']:,}</td><td>{r['out']:,}</td><td>"
        + ", ".join(f"{html.escape(k)}: {v:,}" for k, v in r["dropped"].items())
        + f"</td><td>{html.escape(r.get('note', ''))}</td></tr>" for r in rows)
    path.write_text(
        "<!doctype html><meta charset='utf-8'><title>cmtp build funnel</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;text-align:left}</style>"
        "<h1>cmtp build: rows at every stage</h1>"
        f"<svg width='{width}' height='{height}' xmlns='http://www.w3.org/2000/svg'>{''.join(bars)}</svg>"
        "<p>Dark: rows out; outline: rows in.</p><table><tr><th>stage</th><th>in</th><th>out</th>"
        f"<th>dropped by reason</th><th>result</th></tr>{table}</table>"
        "<p>Training stages count samples read and trained on; eval stages count the items evaluated.</p>" + extra,
        encoding="utf-8")
