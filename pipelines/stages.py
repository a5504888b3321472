"""The stage contract: each stage of the chain is one :class:`Stage`, declared as ``STAGE`` by its driver module
(its config class, the outputs it commits, how it runs, and what ``cmtp build`` needs to know of it); one runner
(:func:`run_stage`) does the rest for every stage, whether ``cmtp STAGE`` or ``cmtp build`` calls it.

A stage's options are one mapping, the same wherever they come from: a ``--config`` YAML file overridden by
the command's flags, or the stage's entry in a build file. The runner splits it into the config dataclass
(defaults in the dataclass alone, validated on construction) and the runner options the stage lists
(workers, shard sizes, sources ...; their defaults are the keyword defaults of the stage's ``run``), then:

- refuses an output folder that already holds this stage's output, unless ``overwrite``;
- never leaves output that the next stage accepts, by one rule with three cases, all here: it runs the stage
  into ``.NAME.tmp`` beside the output folder and moves what it wrote into place only when it succeeded (scratch
  a stage keeps in its folder goes with the tmp folder); a remote output (``gs://``, ``s3://``), which cannot
  be moved into place in one step, is written in place and what the stage wrote is removed if it fails;
  training works in place because it resumes from its own checkpoints and writes ``model/`` last;
- checks the manifest the stage wrote: ``in = out + dropped`` for the total and every source.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from cmtp.schemas import CmtpError, Manifest
from cmtp.transforms.common.paths import is_remote


@dataclass(frozen=True)
class Stage:
    kind: str
    config: Callable[[], type]  # the config dataclass (imported when needed: training pulls in torch)
    outputs: tuple[str, ...]  # what the stage commits into its folder, besides manifest.json
    run: Callable[..., Any]  # run(inputs, out, config, beam_args, **runner_options) -> Manifest | None
    runner_options: tuple[str, ...] = ()  # options that are the runner's, not the config's
    runner_config: Callable[[], type] | None = None  # the dataclass declaring (and range-checking) most of them
    normalize: Callable[[dict], dict] | None = None  # sugar in the options mapping (mine's "range: 10-210")
    in_place: bool = False
    local_only: bool = False  # writes a local folder only (an index and a merge, or training, work on local files)
    inputs: str = "one"  # "one" INPUT, "optional" (mine: --labeled alone), or "none" (extract: sources)
    # what ``cmtp build`` needs to know of a stage, declared with it rather than in build.py:
    output_invariant: frozenset[str] = frozenset()  # options that change how it runs, never what it writes
    beam: bool = False  # a Beam pipeline: the build's beam_args are part of its fingerprint
    external_inputs: Callable[[dict], list[str]] = lambda options: []  # files it reads from outside the build
    note: Callable[[Manifest], str] = lambda manifest: ""  # what it made of its rows, for the build's funnel
    # check_refs(options, {name: Stage}) refuses ``@STAGE`` data it cannot read when the build file is read
    check_refs: Callable[[dict, dict], None] = lambda options, read: None
    check: Callable[[dict], Any] = lambda runner_options: None  # refuses runner options when they are read


def lead_process() -> bool:
    """Whether this process speaks for the run: always, except under torchrun, where rank 0 alone writes the
    output's manifest and lock and prints the summary (every rank runs the command)."""
    return os.environ.get("RANK", "0") == "0"


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
    if stage.runner_config:  # checked now too, so that a build finds a bad value before its first stage runs
        runner = stage.runner_config()
        given = {name: value for name, value in extras.items() if value is not None}
        check_types(runner, given)  # normalises list options in ``given`` (one string: a list of it)
        extras.update(given)
        runner_config_of(runner, extras)
    stage.check(extras)
    return cls(**values), extras


def runner_config_of(cls: type, options: dict[str, Any]):
    """``cls`` (a runner-options dataclass) from the options given: its fields that are set, its defaults for
    the others (an unset flag arrives as None); other runner options are left to the stage."""
    return cls(**{f.name: options[f.name] for f in fields(cls) if options.get(f.name) is not None})


_SCALARS = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def listed(value: Any, name: str) -> list:
    """A list option as a YAML file may give it: one string is a list of that string, None an empty list;
    anything else that is not a list is one error naming the option."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list | tuple):
        raise CmtpError(f"option {name} must be a list (or one string), got {value!r}")
    return list(value)


def check_types(cls: type, values: dict[str, Any]) -> None:
    """Scalar options (int, float, bool, str, or None where the field allows it) have the field's type, so that
    ``threshold: "high"`` in a YAML file is one error naming the option, not a TypeError deep in a stage; list
    options are lists (one string becomes a list of it, in ``values``)."""
    annotations = {f.name: str(f.type) for f in fields(cls)}
    for name, value in values.items():
        if annotations.get(name, "").startswith("list["):
            values[name] = listed(value, name)
            continue
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


def check_device(config, beam_args: list[str] | None) -> None:
    """A config's ``device`` and ``engine`` checked before its stage runs, where its work runs on this machine (a
    remote runner's workers have their own): ``--device cuda`` here without one is one error, not a traceback."""
    device, engine = getattr(config, "device", None), getattr(config, "engine", "torch")
    from .beam_runner import is_local

    if (device is not None or engine != "torch") and is_local(beam_args):
        from cmtp.transforms.embedding.engines import resolve_device

        resolve_device(device, engine)


def refuse_existing(stage: Stage, out: str, overwrite: bool) -> None:
    """An output folder that already holds this stage's output is an error unless ``overwrite``: a re-run must
    not silently replace data another stage may be reading. One that holds another stage's output is always an
    error: ``--overwrite`` replaces this stage's output, never the data of another (it may be this one's input)."""
    from apache_beam.io.filesystems import FileSystems

    existing = [name for name in ["manifest.json", *stage.outputs] if FileSystems.exists(FileSystems.join(out, name))]
    if "manifest.json" in existing:
        try:
            other = Manifest.read(out.removeprefix("file://")).stage
        except CmtpError:
            other = stage.kind  # an unreadable manifest: the overwrite rule below decides
        if other != stage.kind:
            raise CmtpError(f"{out} holds the output of {other}, not of {stage.kind}: choose another --out")
    if existing and not overwrite:
        raise CmtpError(f"{out} already holds a stage output ({', '.join(existing)}): pass --overwrite to replace "
                        "it, or choose another --out")


def _commit(stage: Stage, tmp: Path, out: Path) -> None:
    """Move everything the stage wrote into ``out``. The stage's
    previous outputs go first (an output this run did not write must not survive from the last one); other
    files in ``out`` are left alone."""
    out.mkdir(parents=True, exist_ok=True)
    for name in (*stage.outputs, "manifest.json", "README.md"):  # README.md: the dataset card
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
    from .locking import hold_output

    config, extras = prepare(stage, options)  # a mistake in the options is found before anything is touched
    external = stage.external_inputs(options)
    if not lead_process():
        return _run_stage(stage, inputs, out, config, extras, beam_args, overwrite, external)
    with hold_output(out):
        return _run_stage(stage, inputs, out, config, extras, beam_args, overwrite, external)


def _refuse_reading_own_output(patterns: list[str], out: str) -> None:
    """A stage's outside inputs (extract's source globs, mine's labeled files) must not cover its output folder, the
    tmp folder it is written in or its lock."""
    if is_remote(out):
        return
    from .locking import lock_path
    from .outputs import refuse_inputs_inside

    final = Path(out.removeprefix("file://"))
    lock = lock_path(final, own=False)
    refuse_inputs_inside(patterns, [str(final), str(final.parent / f".{final.name}.tmp")],
                         f"the output {out}", (str(lock), f"{lock}.json"))


def _run_stage(stage: Stage, inputs: list[str], out: str, config, extras: dict[str, Any], beam_args: list[str] | None,
               overwrite: bool, external: list[str]) -> Manifest | None:
    if stage.inputs == "one" and len(inputs) != 1:
        raise CmtpError(f"give exactly one INPUT, got {len(inputs)}")
    if stage.inputs == "optional" and len(inputs) > 1:
        raise CmtpError(f"give at most one INPUT, got {len(inputs)}")
    if stage.local_only and is_remote(out):
        raise CmtpError(f"{stage.kind} writes a local folder, not {out}: write to a local --out, then copy it to "
                        "the store")
    from .dataset_card import write_dataset_card
    from .outputs import check_against_manifest, check_stage_output

    beam_args = list(beam_args or [])
    check_stage_output(out, inputs, beam_args)
    for path in [*inputs, *external]:  # a stage output read as input: still what its manifest lists
        check_against_manifest(path)
    check_device(config, beam_args)
    refuse_existing(stage, out, overwrite)
    _refuse_reading_own_output(external, out)
    if stage.in_place and overwrite and not is_remote(out) and (Path(out) / "manifest.json").exists() \
            and lead_process():
        shutil.rmtree(out)  # replace a finished run: start afresh, not from its checkpoints
    if stage.in_place:
        result = _run_in_place(stage, inputs, out, config, beam_args, extras)
    elif is_remote(out):
        result = _run_remote(stage, inputs, out, config, beam_args, extras)
    else:
        final = Path(out.removeprefix("file://"))
        tmp = final.parent / f".{final.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            result = stage.run(inputs, str(tmp), config, beam_args, **extras)
            if isinstance(result, Manifest):
                result.check()  # an output whose counts do not reconcile is never committed
                write_dataset_card(str(tmp), result, stage.outputs)
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


def _run_remote(stage: Stage, inputs: list[str], out: str, config, beam_args: list[str], extras: dict):
    """A stage writing to a store (``gs://``, ``s3://``) in place; if it fails, or its manifest does not
    reconcile, what it wrote is removed: its output folders, the outcomes file and a manifest (whose shards it had
    already cleared)."""
    from apache_beam.io.filesystems import FileSystems

    from cmtp.transforms.common.outcomes import OUTCOMES_FILE
    from cmtp.transforms.common.scratch import SCRATCH

    from .dataset_card import CARD, write_dataset_card

    try:
        result = stage.run(inputs, out, config, beam_args, **extras)
        if isinstance(result, Manifest):
            result.check()
            write_dataset_card(out, result, stage.outputs)
        return result
    except BaseException:
        written = [FileSystems.join(out, name) for name in (*stage.outputs, OUTCOMES_FILE, SCRATCH, "manifest.json",
                                                            CARD)]
        FileSystems.delete([path for path in written if FileSystems.exists(path)])
        raise


def _run_in_place(stage: Stage, inputs: list[str], out: str, config, beam_args: list[str], extras: dict):
    """A stage that works in its output folder (training resumes from its checkpoints there). A run that fails
    before its first checkpoint leaves nothing: a local folder it created is removed, so a mistake leaves no
    trace."""
    folder = Path(out.removeprefix("file://"))
    existed = is_remote(out) or folder.exists()
    try:
        return stage.run(inputs, out, config, beam_args, **extras)
    except BaseException:
        if not existed and not (folder / "checkpoints").exists() and lead_process():
            shutil.rmtree(folder, ignore_errors=True)
        raise


# -- the stages -------------------------------------------------------------------------------------------------
DRIVERS = {"extract": "cmtp.pipelines.extract", "dedup": "cmtp.pipelines.dedup", "score": "cmtp.pipelines.score",
           "mine": "cmtp.pipelines.mine.run", "train": "cmtp.pipelines.train", "eval": "cmtp.pipelines.evaluate"}


class _Stages(Mapping):
    """kind -> the ``STAGE`` its driver module declares, imported when first asked for (so that ``cmtp --help``
    and a build file's first checks load no pipeline)."""

    def __getitem__(self, kind: str) -> Stage:
        import importlib

        return importlib.import_module(DRIVERS[kind]).STAGE

    def __contains__(self, kind) -> bool:
        return kind in DRIVERS

    def __iter__(self):
        return iter(DRIVERS)

    def __len__(self) -> int:
        return len(DRIVERS)


STAGES: Mapping[str, Stage] = _Stages()


def lazy_class(module: str, name: str) -> Callable[[], type]:
    """A config class imported when first needed (training's pulls in torch)."""
    import importlib

    return lambda: getattr(importlib.import_module(module), name)
