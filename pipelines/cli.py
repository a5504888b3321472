"""The ``cmtp`` console script.

User mistakes (a bad path, an unknown schema, a model that is not on disk) raise :class:`CmtpError`; ``main``
prints them as one ``error:`` line and exits 1. What click itself refuses (an unknown command or option, a value
that does not parse, a missing argument) is one ``error:`` line too, with exit code 2 as click gives it, instead
of typer's boxed usage panel. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from .logs import configure


def main() -> None:
    """The console script; Ctrl-C at any point (typer turns it into exit code 130) is one ``error: aborted``."""
    _quiet_abort()
    try:
        code = _main()
    except KeyboardInterrupt:  # while the command modules load, before typer takes over
        code = 130
    if code == 130:
        from .console import err

        err.print("[red]error:[/red] aborted", highlight=False)
        # the stages have removed what they wrote and released their locks on the way out; the interpreter's own
        # teardown would join Beam's and torch's threads, which can end in a C++ terminate (exit 134, not 130)
        sys.stdout.flush()
        sys.stderr.flush()
        _hard_exit(130)
    sys.exit(code)


_hard_exit = os._exit  # tests that call main() in their own process replace it


_ABORTING = threading.Event()


def _quiet_abort() -> None:
    """Ctrl-C: the threads of Beam's runner (worker handlers, gRPC readers) fail as their peers go away, and their
    tracebacks printed beside ``error: aborted``; once the user has aborted, they are dropped. (Beam's worker
    processes ignore Ctrl-C: ``pipelines/beam_worker.py``.)"""
    default_hook = threading.excepthook

    def on_sigint(signum, frame):
        _ABORTING.set()
        raise KeyboardInterrupt

    def hook(args):
        if not _ABORTING.is_set():
            default_hook(args)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_sigint)
    threading.excepthook = hook


def _main() -> int:
    # before the command modules import Beam (import-time notices about missing GCP clients) or transformers
    configure()
    from rich.markup import escape
    from typer import Abort
    from typer.exceptions import TyperException

    from cmtp.schemas import CmtpError

    from .app import app
    from .console import err

    try:
        # standalone_mode=False: click raises its errors here instead of printing typer's panel and exiting
        code = app(standalone_mode=False)
    except TyperException as exc:  # typer's click: a usage error (exit 2) or another refusal it would print
        if not exc.format_message().strip():  # `cmtp` alone: typer has printed the help already
            sys.exit(exc.exit_code)
        ctx = getattr(exc, "ctx", None)
        where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        err.print(f"[red]error:[/red] {escape(exc.format_message() + where)}", highlight=False)
        sys.exit(exc.exit_code)
    except Abort:
        err.print("[red]error:[/red] aborted", highlight=False)
        sys.exit(1)
    except CmtpError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        sys.exit(1)
    except OSError as exc:  # a missing or unwritable path, a full disk, a read-only file system
        where = f": {exc.filename}" if exc.filename else ""
        err.print(f"[red]error:[/red] {escape(str(exc.strerror or exc) + where)}", highlight=False)
        sys.exit(1)
    except Exception as exc:
        # libraries that wrap an OS error in their own type (safetensors' SafetensorError on a full disk): the
        # user's problem, not a bug, when the cause is the file system
        cause = next((c for c in OS_CAUSES if c in str(exc)), None)
        if cause is None:
            raise
        err.print(f"[red]error:[/red] {escape(cause)} ({type(exc).__name__})", highlight=False)
        sys.exit(1)
    # an explicit typer.Exit comes back as its code; a command's own return value is not an exit status
    return code if isinstance(code, int) else 0


OS_CAUSES = ("No space left on device", "Read-only file system", "Disk quota exceeded")


if __name__ == "__main__":
    main()
