"""The ``cmtp`` console script.

User mistakes (a bad path, an unknown schema, a model that is not on disk) raise :class:`CmtpError`; ``main``
prints them as one ``error:`` line and exits 1. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

from .logs import configure


def main() -> None:
    # before the command modules import Beam (import-time notices about missing GCP clients) or transformers
    configure()
    from rich.markup import escape

    from cmtp.schemas import CmtpError

    from .app import app
    from .console import err

    try:
        app()
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


OS_CAUSES = ("No space left on device", "Read-only file system", "Disk quota exceeded")


if __name__ == "__main__":
    main()
