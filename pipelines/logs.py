"""Quiet library logs by default, all of them with ``cmtp -v`` or ``CMTP_LOG=debug``.

Beam, transformers, huggingface_hub and jieba log start-up notices, model-loading bars and dictionary builds at
INFO/WARNING, in the ``cmtp`` process and in every local Beam worker (which inherits the environment set here).
A user sees cmtp's own lines: progress, what a stage did, warnings that matter (a worse model, a reused stage,
skipped rows), and errors. Library warnings and errors still show (``ERROR`` and above in this process,
``WARNING`` and above in workers, see ``pipelines/beam_worker.py``).
"""

from __future__ import annotations

import logging
import os

VERBOSE_ENV = "CMTP_LOG"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").lower() == "debug"


class _AtLeastWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


def configure(be_verbose: bool | None = None) -> None:
    """Set the log levels of this process and (through the environment) of the workers it starts."""
    if be_verbose:
        os.environ[VERBOSE_ENV] = "debug"
    if verbose():
        for name in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"):
            os.environ.pop(name, None)
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' weight-loading bars too
    logging.getLogger().setLevel(logging.ERROR)
    # a failing DoFn is logged by Beam with its traceback, then raised: the raise is reported as one error line
    # naming its root cause (beam_runner.failure), so the log would only repeat it over forty lines
    logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
    # jieba sets its own logger to DEBUG with its own handler on import: a filter on the logger outlives that
    logging.getLogger("jieba").addFilter(_AtLeastWarning())
