"""The local runner's worker process: Beam's SDK harness with the logs that matter to a user only.

Beam's ``sdk_worker_main`` logs its start-up and shut-down at INFO to the stderr it shares with the ``cmtp``
command (about 20 lines per worker per pipeline), and the pipeline options that would set its level never reach
a local worker. This entry point installs a stderr handler at WARNING (DEBUG with ``CMTP_LOG=debug``) before
the harness starts, drops Beam's import-time notice about optional GCP clients and (unless verbose) the tracebacks
the harness prints itself, and runs the harness unchanged.
"""

from __future__ import annotations

import logging
import os
import signal
import sys


class _DropNotices(logging.Filter):
    NOTICES = ("apitools not found", "No semi_persistent_directory found")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(n in record.getMessage() for n in self.NOTICES)


def main() -> None:
    # Ctrl-C reaches the whole process group: the cmtp process aborts the run and stops its workers; a worker that
    # died of it first printed its own traceback and made the runner's threads report "exited with return code -2"
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from .logs import configure, verbose

    configure()
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.DEBUG if verbose() else logging.WARNING)
    handler.addFilter(_DropNotices())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)  # bound to the real stderr
    if not verbose():
        # the harness prints a failing bundle's traceback to stderr before it reports the failure to the runner,
        # which raises it in the cmtp process: there it is one error line naming the root cause
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (the worker's whole life)
    from apache_beam.runners.worker import sdk_worker_main

    code = 0
    try:
        sdk_worker_main.main(sys.argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # the harness has logged it (CRITICAL); the runner reports the failure in cmtp
        code = 1
    # Leave without the interpreter's teardown: when the runner goes away (Ctrl-C, or the pipeline's end) the
    # harness returns while gRPC's threads still hold the GIL state, and finalizing beside them can abort the
    # worker with "Fatal Python error: PyGILState_Release" written straight to the shared terminal
    for stream in (sys.stdout, sys.__stderr__):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
