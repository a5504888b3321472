"""The ``cmtp`` console script.

User mistakes (a bad path, an unknown schema, a model that is not on disk) raise :class:`CmtpError`; ``main``
prints them as one ``error:`` line and exits 1. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys


def main() -> None:
    # Beam logs import-time notices (e.g. missing GCP clients) on the root logger: quiet them before the
    # command modules import it. The CLI shows errors only.
    logging.getLogger().setLevel(logging.ERROR)
    from cmtp.schemas import CmtpError

    from .app import app
    from .console import err

    try:
        app()
    except CmtpError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(1)
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        err.print(f"[red]error:[/red] {exc.strerror or exc}: {exc.filename}", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
