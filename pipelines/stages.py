"""The stage contract: each stage of the chain declares its config class, the outputs it commits and how it
runs; one runner (:func:`run_stage`) does the rest for every stage, whether ``cmtp STAGE`` or ``cmtp build``
calls it.

A stage's options are one mapping, the same wherever they come from: a ``--config`` YAML file overridden by
the command's flags, or the stage's entry in a build file. The runner splits it into the config dataclass
(defaults in the dataclass alone, validated on construction) and the runner options the stage lists
(workers, shard sizes, sources ...; their defaults are the keyword defaults of the stage's ``run``), then:

- refuses an output folder that already holds this stage's output, unless ``overwrite``;
- runs the stage into ``.NAME.tmp`` beside the output folder and moves what it wrote into place only when it
  succeeded, so a killed or failed stage never leaves output that the next stage accepts (remote outputs such
  as ``gs://`` are written in place and removed on failure by the Beam drivers; training runs in place because
  it resumes from its own checkpoints and writes ``model/`` last);
- checks the manifest the stage wrote: ``in = out + dropped`` for the total and every source.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from cmtp.schemas import CmtpError, Manifest


@dataclass(frozen=True)
class Stage:
    kind: str
    config: Callable[[], type]  # the config dataclass (imported when needed: training pulls in torch)
    outputs: tuple[str, ...]  # what the stage commits into its folder, besides manifest.json
    run: Callable[..., Any]  # run(inputs, out, config, beam_args, **runner_options) -> Manifest | None
    runner_options: tuple[str, ...] = ()  # options that are the runner's, not the config's
    normalize: Callable[[dict], dict] | None = None  # sugar in the options mapping (mine's "range: 10-210")
    in_place: bool = False
    inputs: str = "one"  # "one" INPUT, "optional" (mine: --labeled alone), or "none" (extract: sources)


def prepare(stage: Stage, options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(config, runner options) from a stage's options mapping; unknown names are an error naming them."""
    values = stage.normalize(dict(options)) if stage.normalize else dict(options)
    extras = {name: values.pop(name) for name in stage.runner_options if name in values}
    workers = extras.get("workers")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise CmtpError(f"option workers must be an integer in [1, inf), got {workers!r}")
    cls = stage.config()
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        import difflib

        known = sorted(names | set(stage.runner_options))
        hints = [f"{u} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(u, known, 1)) else u
                 for u in unknown]
        raise CmtpError(f"unknown {stage.kind} option(s): {', '.join(hints)}; known: {', '.join(known)}")
    check_types(cls, values)
    return cls(**values), extras


_SCALARS = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def check_types(cls: type, values: dict[str, Any]) -> None:
    """Scalar options (int, float, bool, str, or None where the field allows it) have the field's type, so that
    ``threshold: "high"`` in a YAML file is one error naming the option, not a TypeError deep in a stage."""
    annotations = {f.name: str(f.type) for f in fields(cls)}
    for name, value in values.items():
        parts = [p.strip() for p in annotations.get(name, "").split("|")]
        scalars = [p for p in parts if p in _SCALARS]
        if not scalars or len(scalars) + ("None" in parts) != len(parts):
            continue  # lists, mappings and other types are checked by the config itself
        if value is None and "None" in parts:
            continue
        allowed = tuple(t for p in scalars for t in _SCALARS[p])
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            want = " or ".join({"int": "an integer", "float": "a number", "bool": "true/false", "str": "a string"}[p]
                               for p in scalars)
            raise CmtpError(f"option {name} must be {want}, got {value!r}")


def _is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def refuse_existing(stage: Stage, out: str, overwrite: bool) -> None:
    """An output folder that already holds this stage's output is an error unless ``overwrite``: a re-run must
    not silently replace data another stage may be reading."""
    if overwrite:
        return
    from apache_beam.io.filesystems import FileSystems

    existing = [name for name in ["manifest.json", *stage.outputs] if FileSystems.exists(FileSystems.join(out, name))]
    if existing:
        raise CmtpError(f"{out} already holds a stage output ({', '.join(existing)}): pass --overwrite to replace "
                        "it, or choose another --out")


def _commit(stage: Stage, tmp: Path, out: Path) -> None:
    """Move everything the stage wrote into ``out``. The stage's
    previous outputs go first (an output this run did not write must not survive from the last one); other
    files in ``out`` are left alone."""
    out.mkdir(parents=True, exist_ok=True)
    for name in (*stage.outputs, "manifest.json"):
        old = out / name
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
    for entry in sorted(tmp.iterdir()):
        target = out / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        entry.rename(target)
    tmp.rmdir()  # the manifest moves as it is: its outputs are relative to its folder


def run_stage(stage: Stage, inputs: list[str], out: str, options: dict[str, Any], beam_args: list[str] | None = None,
              overwrite: bool = False) -> Manifest | None:
    """Run one stage by the contract above; returns its (checked) manifest, None for a stage without one. The
    output is locked for the whole run (``pipelines/locking.py``; under torchrun by rank 0 alone)."""
    from .locking import hold

    config, extras = prepare(stage, options)  # a mistake in the options is found before anything is touched
    if os.environ.get("RANK", "0") != "0":
        return _run_stage(stage, inputs, out, config, extras, beam_args, overwrite)
    with hold(out):
        return _run_stage(stage, inputs, out, config, extras, beam_args, overwrite)


def _run_stage(stage: Stage, inputs: list[str], out: str, config, extras: dict[str, Any], beam_args: list[str] | None,
               overwrite: bool) -> Manifest | None:
    if stage.inputs == "one" and len(inputs) != 1:
        raise CmtpError(f"give exactly one INPUT, got {len(inputs)}")
    if stage.inputs == "optional" and len(inputs) > 1:
        raise CmtpError(f"give at most one INPUT, got {len(inputs)}")
    from .outputs import check_stage_output

    check_stage_output(out, inputs)
    refuse_existing(stage, out, overwrite)
    beam_args = list(beam_args or [])
    if stage.in_place and overwrite and not _is_remote(out) and (Path(out) / "manifest.json").exists() \
            and os.environ.get("RANK", "0") == "0":
        shutil.rmtree(out)  # replace a finished run: start afresh, not from its checkpoints
    if stage.in_place and not _is_remote(out):
        result = _run_in_place(stage, inputs, out, config, beam_args, extras)
    elif _is_remote(out):
        result = stage.run(inputs, out, config, beam_args, **extras)
    else:
        final = Path(out.removeprefix("file://"))
        tmp = final.parent / f".{final.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            result = stage.run(inputs, str(tmp), config, beam_args, **extras)
            if isinstance(result, Manifest):
                result.check()  # an output whose counts do not reconcile is never committed
        except CmtpError as exc:  # the user named ``out``, not the folder it is written in
            shutil.rmtree(tmp, ignore_errors=True)
            raise CmtpError(str(exc).replace(str(tmp), str(final))) from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _commit(stage, tmp, final)
        return Manifest.read(str(final)) if isinstance(result, Manifest) else result
    if isinstance(result, Manifest):
        result.check()
    return result


def _run_in_place(stage: Stage, inputs: list[str], out: str, config, beam_args: list[str], extras: dict):
    """A stage that works in its output folder (training resumes from its checkpoints there). A run that fails
    before its first checkpoint leaves nothing: a folder it created is removed, so a mistake leaves no trace."""
    folder = Path(out.removeprefix("file://"))
    existed = folder.exists()
    try:
        return stage.run(inputs, out, config, beam_args, **extras)
    except BaseException:
        if not existed and not (folder / "checkpoints").exists() and os.environ.get("RANK", "0") == "0":
            shutil.rmtree(folder, ignore_errors=True)
        raise


# -- the stages ---------------------------------------------------------------------------------------------------
def _shards(num_shards=None, target_shard_rows=None, row_group_size=None):
    from cmtp.transforms.common.parquet_shards import ShardOptions

    given = {"num_shards": num_shards, "target_shard_rows": target_shard_rows, "row_group_size": row_group_size}
    return ShardOptions(**{k: v for k, v in given.items() if v is not None})


SHARDS = ("num_shards", "target_shard_rows", "row_group_size")


def _run_extract(inputs, out, config, beam_args, *, sources=(), adapter_options=None, plugins=(), workers=2,
                 **shards):
    from .extract import load_plugins, parse_adapter_options, parse_source, run_extract

    load_plugins(list(plugins))
    if isinstance(adapter_options, dict):  # a build file's mapping; --adapter-option gives KEY=VALUE strings
        adapter_options = [f"{k}={v}" for k, v in adapter_options.items()]
    options = parse_adapter_options(list(adapter_options or []))
    specs = [parse_source(s, options, list(plugins)) for s in sources]
    if not specs:
        raise CmtpError("give at least one source: ADAPTER=GLOB or NAME:ADAPTER=GLOB")
    return run_extract(specs, out, config, _shards(**shards), beam_args, workers)


def _run_dedup(inputs, out, config, beam_args, *, workers=1, **shards):
    from .dedup import run_dedup

    return run_dedup(inputs[0], out, config, _shards(**shards), beam_args, workers)


def _run_score(inputs, out, config, beam_args, *, workers=1, target_keep_rate=None, rethreshold=None, **shards):
    from .score import run_rethreshold, run_score

    if rethreshold is not None:
        if target_keep_rate is not None:
            raise CmtpError("give --rethreshold or --target-keep-rate, not both")
        return run_rethreshold(inputs[0], out, rethreshold, _shards(**shards), beam_args, workers)
    return run_score(inputs[0], out, config, _shards(**shards), beam_args, workers, target_keep_rate)


def rank_range(text: str) -> tuple[int, int]:
    try:
        start, end = (int(x) for x in str(text).split("-"))
    except ValueError as exc:
        raise CmtpError(f"--range must be START-END, e.g. 10-210, not {text!r}") from exc
    return start, end


def _mine_options(values: dict) -> dict:
    if "range" in values:
        values["range_start"], values["range_end"] = rank_range(values.pop("range"))
    return values


def _run_mine(inputs, out, config, beam_args):
    from .mine.run import run_mine

    return run_mine(inputs[0] if inputs else None, out, config, beam_args)


def data_spec(spec, index: int) -> dict:
    """One training dataset: a {name, paths, weight} mapping, or PATH | NAME=PATH | NAME=PATH@WEIGHT."""
    if isinstance(spec, dict):
        return spec
    spec = str(spec)
    name, _, rest = spec.rpartition("=") if "=" in spec.split("://")[0] else ("", "", spec)
    path, _, weight = rest.rpartition("@") if "@" in rest else (rest, "", "1")
    try:
        return {"name": name or f"data{index}", "paths": [path], "weight": float(weight)}
    except ValueError as exc:
        raise CmtpError(f"bad data {spec!r}: use PATH, NAME=PATH or NAME=PATH@WEIGHT") from exc


def _train_options(values: dict) -> dict:
    """``data``: datasets as :func:`data_spec` reads them; ``eval``: one task path or a list."""
    values["data"] = [data_spec(d, i) for i, d in enumerate(values.get("data") or [])]
    if isinstance(values.get("eval"), str):
        values["eval"] = [values["eval"]]
    return values


def _run_train(inputs, out, config, beam_args):
    """Train into ``out`` (resuming from its checkpoints) and write a manifest: samples trained, rows the
    stream skipped as unusable, and the run's summary (losses, speed, evaluation against the start)."""
    from dataclasses import replace

    from cmtp.trainer.loop import train

    config = replace(config, output_dir=out)
    summary = train(config)
    manifest = Manifest(
        stage="train", config=config.to_dict(), inputs=[p for d in config.data for p in d.paths],
        outputs={"model": {"path": summary["model"], "files": 1, "rows": 0, "schema": "model"}},
        count_in=summary["samples"] + summary["malformed_rows"], count_out=summary["samples"],
        dropped={"unusable_row": summary["malformed_rows"]} if summary["malformed_rows"] else {},
        extra=summary,
    )
    if os.environ.get("RANK", "0") == "0":  # under torchrun every rank returns here; one writes (the group is gone)
        manifest.write(out)
    return manifest


EVAL_RUNNER_OPTIONS = ("model", "compare", "tasks", "suite", "max_per_task")


def eval_task_paths(tasks=(), suite: str | None = None) -> list[str]:
    """The task paths an eval reads: ``tasks`` and the named ``suite``."""
    return list(tasks or []) + ([f"suite:{suite}"] if suite else [])


def _run_eval(inputs, out, config, beam_args, *, model=None, compare=None, tasks=(), suite=None,
              max_per_task=None):
    import json

    from cmtp.trainer.evaluation import evaluate_with_baseline, load_tasks

    paths = eval_task_paths(tasks, suite)
    if not model or not paths:
        raise CmtpError("an eval stage needs model: and tasks: or suite:")
    loaded = load_tasks(paths, max_per_task, config.seed)
    report, base, record = evaluate_with_baseline(model, loaded, config, compare)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "eval.json").write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
    # like every stage: items read, evaluated and skipped (rows a task file could not use), and the result
    skipped = sum(t.skipped_rows for t in loaded)
    evaluated = sum(t.size() for t in loaded)
    manifest = Manifest(
        stage="eval", config={**asdict(config), "model": model, "compare": compare, "tasks": paths,
                              "max_per_task": max_per_task},
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


def _class(module: str, name: str) -> Callable[[], type]:
    """A config class imported when first needed (training's pulls in torch)."""
    import importlib

    return lambda: getattr(importlib.import_module(module), name)


def _eval_options(values: dict) -> dict:
    """``instruction: bge`` is BGE's Chinese retrieval instruction."""
    if values.get("instruction") == "bge":
        from cmtp.trainer.evaluation.runner import BGE_ZH_INSTRUCTION

        values["instruction"] = BGE_ZH_INSTRUCTION
    return values


STAGES: dict[str, Stage] = {
    "extract": Stage("extract", _class("cmtp.transforms.extract.config", "ExtractConfig"),
                     ("pairs", "pretrain", "dead_letters"), _run_extract,
                     runner_options=("sources", "adapter_options", "plugins", "workers", *SHARDS), inputs="none"),
    "dedup": Stage("dedup", _class("cmtp.transforms.dedup.config", "DedupConfig"), ("pairs", "dead_letters"),
                   _run_dedup, runner_options=("workers", *SHARDS)),
    "score": Stage("score", _class("cmtp.transforms.score.config", "ScoreConfig"), ("kept", "rejected", "dead_letters"),
                   _run_score, runner_options=("workers", "target_keep_rate", "rethreshold", *SHARDS)),
    "mine": Stage("mine", _class("cmtp.transforms.mine.config", "MineConfig"), ("examples", "dead_letters"), _run_mine,
                  normalize=_mine_options, inputs="optional"),
    "train": Stage("train", _class("cmtp.trainer.config", "TrainConfig"), ("model",), _run_train,
                   normalize=_train_options, in_place=True, inputs="none"),
    "eval": Stage("eval", _class("cmtp.trainer.evaluation", "EvalOptions"), ("eval.json",), _run_eval,
                  runner_options=EVAL_RUNNER_OPTIONS, normalize=_eval_options, inputs="none"),
}
