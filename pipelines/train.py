"""The train stage: the bundled trainer run in its output folder (it resumes from its own checkpoints there),
with a manifest of the samples it trained on and what the run made of them."""

from __future__ import annotations

from cmtp.schemas import CmtpError, Manifest

from .stages import Stage, lazy_class, lead_process, listed


def data_spec(spec, index: int) -> dict:
    """One training dataset: a {paths, name, weight} mapping, or PATH | NAME=PATH | NAME=PATH@WEIGHT (the weight a
    number; ``DataSource`` checks it is positive)."""
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - {"name", "paths", "weight"})
        if "paths" not in spec or unknown:
            raise CmtpError(f"data {spec!r}: a mapping has paths: [PATH, ...] and may have name and weight"
                            + (f", not {', '.join(map(str, unknown))}" if unknown else ""))
        name, paths, weight = spec.get("name"), listed(spec["paths"], "data paths"), spec.get("weight", 1.0)
    else:
        name, _, rest = str(spec).rpartition("=") if "=" in str(spec).split("://")[0] else ("", "", str(spec))
        path, _, weight = rest.rpartition("@") if "@" in rest[1:] else (rest, "", "1")  # @STAGE: a build's
        paths = [path]
    try:
        weight = float(weight)
    except (TypeError, ValueError) as exc:
        raise CmtpError(f"bad data {spec!r}: its weight must be a number (PATH, NAME=PATH or NAME=PATH@WEIGHT)") \
            from exc
    return {"name": str(name or f"data{index}"), "paths": paths, "weight": weight}


def _options(values: dict) -> dict:
    """``data``: datasets as :func:`data_spec` reads them (``eval``, one task path or a list, is a list option that
    ``stages.check_types`` reads like every other); ``epochs`` or ``max_steps``, not both."""
    values["data"] = [data_spec(d, i) for i, d in enumerate(listed(values.get("data"), "data"))]
    if values.get("epochs") is not None and values.get("max_steps") is not None:  # epochs silently won
        raise CmtpError("--epochs and --max-steps each set the run's length: give one")
    return values


def _run_stage(inputs, out, config, beam_args):
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
    if lead_process():  # under torchrun every rank returns here; one writes (the group is gone)
        manifest.write(out)
    return manifest


def _outside_files(options: dict) -> list[str]:
    """Training data and evaluation task files (``@STAGE`` data is the build's own)."""
    paths = [p for i, d in enumerate(listed(options.get("data"), "data")) if not str(d).startswith("@")
             for p in data_spec(d, i)["paths"]]
    return paths + listed(options.get("eval"), "eval")


def _check_refs(options: dict, read: dict) -> None:
    """``@STAGE`` data naming a whole folder of two kinds (extract's) is refused when the build file is read, not
    when training reads it, after every stage before it has run."""
    from cmtp.trainer.data.stream import check_one_kind

    for path in (p for d in options["data"] for p in d["paths"] if isinstance(p, str) and p.startswith("@")):
        name, _, sub = path[1:].partition("/")
        if not sub.strip("/"):
            check_one_kind(path, read[name].outputs)


def _note(m: Manifest) -> str:
    e = m.extra
    loss = f", loss {e['first_loss']:.3g} -> {e['final_loss']:.3g}" if e.get("final_loss") is not None else ""
    return f"{e.get('steps', 0)} steps{loss}"


STAGE = Stage("train", lazy_class("cmtp.trainer.config", "TrainConfig"), ("model",), _run_stage, normalize=_options,
              in_place=True, local_only=True, inputs="none", external_inputs=_outside_files, note=_note,
              check_refs=_check_refs)
