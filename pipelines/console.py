"""Shared rich consoles: results go to stdout, progress and errors to stderr. Emoji codes are off: user text and
values (``--thresholds a:b:c``, a passage with ``:cn:``) are printed as they are."""

from rich.console import Console

out = Console(soft_wrap=True, emoji=False)
err = Console(stderr=True, soft_wrap=True, emoji=False)
