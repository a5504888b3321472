"""Shared rich consoles: results go to stdout, progress and errors to stderr."""

from rich.console import Console

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
