"""Options declared once, on the config dataclass field: default, help, range or choices, flag spellings. The
command line (``pipelines/commands/options.py``), ``--config`` YAML and build files all read them from there.

    batch_size: int = option(64, "sentences per forward pass", ge=1)
    threshold: float = option(0.43, "keep pairs with score >= this", ge=-1, le=1, why="scores are cosines")
    policy: str = option("longest", "representative", choices=("longest", "lowest_id"))
    batch_size: int = field(default=64, metadata=within(ge=1))   # a range alone, for an option with no flag

:func:`check_ranges` (called from a config's ``__post_init__``) turns a value outside its range (each item of a
list option) or its choices into one :class:`CmtpError` naming the option and what it allows, before any work
starts. ``None`` is left to the field's own meaning (a default chosen later).
"""

from __future__ import annotations

from dataclasses import MISSING, field, fields
from typing import Any

from .errors import CmtpError


def within(ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
           why: str = "") -> dict[str, Any]:
    """Field metadata declaring the option's range (inclusive ``ge``/``le``, exclusive ``gt``/``lt``)."""
    return {"range": {k: v for k, v in {"ge": ge, "gt": gt, "le": le, "lt": lt}.items() if v is not None},
            "range_why": why}


def option(default: Any = MISSING, help: str = "", *, factory: Any = MISSING, flag: str | None = None,
           aliases: tuple[str, ...] = (), why: str = "", choices: tuple[str, ...] = (), **bounds: float) -> Any:
    """A config field that is also a command-line option: ``help`` (the choices and the default are appended where
    the CLI shows it), ``flag`` (default ``--field-name``; a bool is ``--name/--no-name``), older spellings in
    ``aliases``, the values it allows (``choices``), and the range as :func:`within` takes it."""
    metadata = {"help": help, "flag": flag, "aliases": tuple(aliases), "choices": tuple(choices),
                **(within(**bounds, why=why) if bounds else {})}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def flag_name(name: str) -> str:
    """An option's command-line spelling: ``--field-name``."""
    return "--" + name.replace("_", "-")


def flag_of(f) -> str:
    """A field's command-line flag: its declared ``flag`` (``--on/--off`` for some bools) or ``--field-name``."""
    return f.metadata.get("flag") or flag_name(f.name)


def describe(bounds: dict[str, float]) -> str:
    low = f"[{bounds['ge']:g}" if "ge" in bounds else f"({bounds['gt']:g}" if "gt" in bounds else "(-inf"
    high = f"{bounds['le']:g}]" if "le" in bounds else f"{bounds['lt']:g})" if "lt" in bounds else "inf)"
    return f"{low}, {high}"


def check_value(name: str, value: float | None, why: str = "", **bounds: float) -> None:
    """One value inside its range (``ge``/``gt``/``le``/``lt``), else one error naming it; None passes."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if not all([value >= bounds.get("ge", value), value > bounds["gt"] if "gt" in bounds else True,
                value <= bounds.get("le", value), value < bounds["lt"] if "lt" in bounds else True]):
        raise CmtpError(f"{name} must be in {describe(bounds)}{f' ({why})' if why else ''}, got {value:g}")


def check_ranges(config: Any) -> None:
    """Every field of ``config`` inside its declared range (each item of a list) and choices."""
    for f in fields(config):
        value, bounds, choices = getattr(config, f.name), f.metadata.get("range"), f.metadata.get("choices")
        if choices and value is not None and value not in choices:
            raise CmtpError(f"option {f.name} must be one of {', '.join(choices)}, got {value!r}")
        for item in (value if isinstance(value, list) else [value]) if bounds else []:
            check_value(f"option {f.name}", item, f.metadata.get("range_why", ""), **bounds)
