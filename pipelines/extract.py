"""The extract pipeline: raw dumps -> ``pairs/``, ``pretrain/``, ``dead_letters/`` Parquet + ``manifest.json``."""

from __future__ import annotations

import time

from cmtp.schemas import DEAD_LETTER, PAIR, PRETRAIN_TEXT, CmtpError, Manifest
from cmtp.transforms.common import scratch
from cmtp.transforms.common.outcomes import CountOutcomes
from cmtp.transforms.common.parquet_shards import SHARD_OPTIONS, ShardOptions
from cmtp.transforms.common.paths import beam_pattern
from cmtp.transforms.extract.adapters import ADAPTERS
from cmtp.transforms.extract.config import ExtractConfig
from cmtp.transforms.extract.dofns import SourceSpec
from cmtp.transforms.extract.filters import load_blocklist
from cmtp.transforms.extract.ptransform import ExtractPairs

from .beam_runner import join_ends, pipeline_run
from .outputs import file_size, match_files, pop_outcomes, prepare_output, summarize_output
from .progress import Phase, watch
from .stages import Stage, listed, runner_config_of

OUTPUTS = {"pairs": "pair", "pretrain": "pretrain_text", "dead_letters": "dead_letter"}


def _run(sources, out, config, shards, beam_args, workers, size: int) -> None:
    work = scratch.scratch_dir(out)
    pieces = f"{work}/pieces"
    phases = [Phase("read and clean", size, "B"), Phase("write", None, "row")]
    with watch("extract", None, "file", beam_args, phases) as progress, pipeline_run(beam_args, workers) as p:
        result = p | "Extract" >> ExtractPairs(sources, config, work, progress)
        writes = (
            result.pairs | "WritePairs" >> shards.writer(f"{out}/pairs", PAIR, f"{pieces}/pairs", progress),
            result.pretrain | "WritePretrain" >> shards.writer(f"{out}/pretrain", PRETRAIN_TEXT, f"{pieces}/pretrain",
                                                               progress),
            result.dead | "WriteDead" >> shards.writer(f"{out}/dead_letters", DEAD_LETTER, f"{pieces}/dead",
                                                       progress),
        )
        counted = result.counts | "Count" >> CountOutcomes(out)
        join_ends(*writes, counted)
    scratch.remove(work)


def parse_adapter_options(items: list[str]) -> dict:
    """``KEY=VALUE`` strings -> options; values read as YAML scalars (``true``, ``3``, ``text``)."""
    import yaml

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CmtpError(f"adapter option {item!r} must be KEY=VALUE")
        options[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    known = {name for cls in ADAPTERS.values() for name in cls.option_names()}
    unknown = sorted(set(options) - known)
    if unknown:
        raise CmtpError(f"no adapter has option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return options


def load_plugins(modules: list[str]) -> None:
    """Import modules that register their own adapters (``@register_adapter``)."""
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # not found, or its own code failed (a traceback from the user's module)
            raise CmtpError(f"cannot import adapter plugin {module!r}: {type(exc).__name__}: {exc}") from exc


def parse_source(text: str, adapter_options: dict, plugins: list[str] = ()) -> SourceSpec:
    left, sep, pattern = text.partition("=")
    if not sep or not pattern.strip():
        raise CmtpError(f"source {text!r} must be ADAPTER=GLOB or NAME:ADAPTER=GLOB")
    name, _, adapter = left.rpartition(":")
    adapter = adapter.strip()
    if adapter not in ADAPTERS:
        raise CmtpError(f"unknown adapter {adapter!r} in {text!r}; known: {', '.join(sorted(ADAPTERS))}")
    options = {k: v for k, v in adapter_options.items() if k in ADAPTERS[adapter].option_names() and v is not None}
    return SourceSpec(name=(name or adapter).strip(), adapter=adapter, pattern=beam_pattern(pattern), options=options,
                      plugins=tuple(plugins))


def run_extract(
    sources: list[SourceSpec],
    out: str,
    config: ExtractConfig | None = None,
    shards: ShardOptions | None = None,
    beam_args: list[str] | None = None,
    workers: int = 1,
) -> Manifest:
    config, shards = config or ExtractConfig(), shards or ShardOptions()
    matched = {spec.pattern: match_files(spec.pattern) for spec in sources}
    for blocklist in config.extra_blocklists:  # read by every worker: missing, it would fail each of them
        match_files(blocklist)
    load_blocklist(config.extra_blocklists)  # and unreadable (not UTF-8): one error naming it, here
    prepare_output(out, list(OUTPUTS))
    started = time.perf_counter()
    _run(sources, out, config, shards, beam_args, workers, sum(file_size(f) for fs in matched.values() for f in fs))
    seconds = time.perf_counter() - started
    outcomes = pop_outcomes(out)
    facts = outcomes.pop("facts", {})
    manifest = Manifest(
        stage="extract",
        config={"sources": [vars(s) for s in sources], **config.to_dict(), "shards": vars(shards),
                "workers": workers, "beam_args": beam_args or []},
        inputs=[f for files in matched.values() for f in files],
        outputs={name: summarize_output(out, name, schema) for name, schema in OUTPUTS.items()},
        extra={"documents_changed_by_cleaning_step": dict(sorted(facts.get("cleaning", {}).items())),
               "seconds": round(seconds, 2),
               "documents_per_second": round(outcomes["count_in"] / max(seconds, 1e-9), 1)},
        **outcomes,
    )
    manifest.write(out)
    return manifest


def source_specs(sources, adapter_options=None, plugins=()) -> list[SourceSpec]:
    """The sources as a stage's options give them (``NAME:ADAPTER=GLOB`` strings, adapter options as KEY=VALUE strings
    or a build file's mapping, plugin modules), parsed; at least one. Checked when the options are read, so a build
    without sources fails at --dry-run, not when the stage runs."""
    sources, plugins = listed(sources, "sources"), listed(plugins, "plugins")
    load_plugins(plugins)
    if isinstance(adapter_options, dict):  # a build file's mapping; --adapter-option gives KEY=VALUE strings
        adapter_options = [f"{k}={v}" for k, v in adapter_options.items()]
    options = parse_adapter_options(list(adapter_options or []))
    specs = [parse_source(s, options, plugins) for s in sources]
    if not specs:
        raise CmtpError("give at least one source: ADAPTER=GLOB or NAME:ADAPTER=GLOB")
    return specs


def _run_stage(inputs, out, config, beam_args, *, sources=(), adapter_options=None, plugins=(), workers=2, **shards):
    specs = source_specs(sources, adapter_options, plugins)
    return run_extract(specs, out, config, runner_config_of(ShardOptions, shards), beam_args, workers)


def _source_files(options: dict) -> list[str]:
    """The globs of ``sources: [NAME:ADAPTER=GLOB, ...]`` and the extra blocklists (their content is part of
    what extract does: an edited blocklist re-runs it)."""
    globs = [s.split("=", 1)[1] for s in listed(options.get("sources"), "sources") if "=" in str(s)]
    return globs + listed(options.get("extra_blocklists"), "extra_blocklists")


STAGE = Stage("extract", lambda: ExtractConfig, tuple(OUTPUTS), _run_stage, inputs="none",
              runner_options=("sources", "adapter_options", "plugins", "workers", *SHARD_OPTIONS),
              runner_config=lambda: ShardOptions, output_invariant=frozenset({"workers"}), beam=True,
              external_inputs=_source_files,
              check=lambda extras: source_specs(extras.get("sources"), extras.get("adapter_options"),
                                                extras.get("plugins")))
