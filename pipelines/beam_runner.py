"""Building a Beam pipeline for the chosen runner, without ever waiting on the network locally.

Locally (the default) the portable FnApiRunner runs in-process, or with ``workers > 1`` in that many
worker processes (``direct_running_mode=multi_processing``): passing it explicitly keeps the DirectRunner
from first trying to download Prism. Any other runner (``--runner DataflowRunner --project ... --region ...
--temp_location gs://...``, Flink, Spark, Portable) is chosen with its usual Beam flags, passed through.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from cmtp.schemas.errors import CmtpError

LOCAL_RUNNERS = {None, "", "local", "DirectRunner", "FnApiRunner"}


def beam_options(beam_args: list[str] | None) -> PipelineOptions:
    """Beam's options for ``beam_args``, parsed here first: a value Beam's parser refuses is one error (argparse
    would print Beam's whole usage and exit)."""
    import contextlib
    import io

    options, caught = PipelineOptions(list(beam_args or [])), io.StringIO()
    try:
        with contextlib.redirect_stderr(caught):
            options.get_all_options()
    except SystemExit:
        refused = (caught.getvalue().strip().splitlines() or ["error: invalid"])[-1].split("error: ", 1)[-1]
        raise CmtpError(f"Beam flags: {refused}") from None
    return options


def unknown_flags(beam_args: list[str] | None) -> list[str]:
    """The flags in ``beam_args`` that no Beam option declares (Beam drops them with a log line nobody sees)."""
    options = beam_options(beam_args)
    known = options.get_all_options()
    return [f"--{name}" for name in options.get_all_options(retain_unknown_options=True) if name not in known]


def is_local(beam_args: list[str] | None) -> bool:
    """Whether ``beam_args`` choose the local runner (no ``--runner``, or one of the local names)."""
    return beam_options(beam_args).view_as(StandardOptions).runner in LOCAL_RUNNERS


def _worker_environment(workers: int):
    """In this process for one worker; else ``workers`` processes of Beam's SDK harness started through
    ``pipelines/beam_worker.py`` (the harness with quiet logs), as ``direct_running_mode=multi_processing``
    would start them."""
    if workers <= 1:
        return None  # the runner's embedded (in-memory) environment
    import sys

    from apache_beam.transforms.environments import SubprocessSDKEnvironment

    return SubprocessSDKEnvironment.from_command_string(f"{sys.executable} -m cmtp.pipelines.beam_worker")


def make_pipeline(beam_args: list[str] | None = None, workers: int = 1) -> beam.Pipeline:
    """A pipeline for ``beam_args`` (Beam's own flags); local FnApiRunner unless ``--runner`` says otherwise."""
    args = list(beam_args or [])
    options = beam_options(args)
    if is_local(args):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        # Beam's construction-time type inference disassembles every lambda's bytecode (a third of a small stage's
        # wall time, and nothing here relies on inferred types: coders default to pickling); runners that need it
        # (Dataflow) keep it
        local = PipelineOptions(args + [f"--direct_num_workers={max(1, workers)}", "--no_pipeline_type_check"])
        local.view_as(StandardOptions).runner = None
        return beam.Pipeline(runner=FnApiRunner(default_environment=_worker_environment(workers)), options=local)
    try:
        return beam.Pipeline(options=options)
    except ValueError as exc:  # unknown runner name, missing Dataflow options (one line each, joined)
        raise CmtpError(f"cannot create the Beam pipeline: {' '.join(str(exc).split())}") from exc


@contextmanager
def pipeline_run(beam_args: list[str] | None = None, workers: int = 1, what: str = "the pipeline"):
    """A pipeline to build inside the block; it runs, and is waited for, when the block ends. Its failure is
    one ``CmtpError`` (:func:`failure`); what it wrote is removed by the stage runner (``pipelines/stages.py``)."""
    pipeline = make_pipeline(beam_args, workers)
    yield pipeline
    run_to_completion(pipeline, what)


_EXCEPTION_LINE = re.compile(r"^\s*(?:[\w.]+\.)?(\w+(?:Error|Exception|Exit)): (.+)$")


def root_cause(text: str) -> str | None:
    """The root cause in a (worker) traceback's text: the last ``SomeError: message`` line, preferring one with an
    OS error number (``[Errno 28] No space left on device``), which Beam wraps in several layers of RuntimeError."""
    causes = [m for line in text.splitlines() if (m := _EXCEPTION_LINE.match(line))]
    with_errno = [m for m in causes if "[Errno" in m.group(2)]
    pick = (with_errno or causes or [None])[-1]
    return f"{pick.group(1)}: {pick.group(2).strip()[:400]}" if pick else None


def failure(what: str, exc: Exception) -> CmtpError:
    """One error line for a pipeline that raised: Beam's exceptions carry worker tracebacks over many lines, and
    their first line ("Traceback (most recent call last):") says nothing; the root cause is named instead."""
    text = str(exc).strip()
    cause = root_cause(text) or f"{type(exc).__name__}: {(text.splitlines() or [''])[0][:400]}"
    return CmtpError(f"{what} failed ({cause})")


def run_to_completion(pipeline: beam.Pipeline, what: str) -> None:
    """Run ``pipeline`` and wait for it; any failure becomes one ``CmtpError`` naming ``what``."""
    try:
        pipeline.run().wait_until_finish()
    except CmtpError:
        raise
    except Exception as exc:
        if "KeyboardInterrupt" in str(exc):  # Ctrl-C reached a worker thread first: the user's abort, not a failure
            raise KeyboardInterrupt from None
        raise failure(what, exc) from exc


def join_ends(*branches) -> None:
    """Make one last transform depend on every branch (the shard writes, the outcome counts).

    Beam's DaskRunner (2.77) computes only the graph of the last transform applied, "connected to the full Bag
    Task Graph" as its comment assumes: a write that nothing downstream consumes silently never runs there
    (extract finished with a manifest and no Parquet). Runners that run every leaf are unaffected."""
    first = branches[0]
    _ = branches | "AllEnds" >> beam.Flatten(pipeline=first.pipeline) | "Done" >> beam.combiners.Count.Globally()
