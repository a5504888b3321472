"""Command-line options generated from the config dataclasses, where each option is declared once
(``schemas/ranges.option``: default, help, range, flag spellings).

``@config_options(ScoreConfig, ShardOptions)`` on a command whose last parameter is ``**flags`` gives it one
``--field-name`` option per field that has help; the command receives the values the user set as ``flags``
(unset ones are None, so ``stage_options`` lets the ``--config`` YAML and the field defaults decide). typer reads
a function's parameters from its signature, so the generated ones are added there; nothing is parsed by hand.
"""

from __future__ import annotations

import functools
import inspect
import sys
import types
import typing
from dataclasses import MISSING, fields
from typing import Any

import typer


def _default_text(field) -> str:
    default = field.default if field.default is not MISSING else None
    if default is None or default == "" or isinstance(default, bool):
        return ""
    return f" (default {default:,})" if isinstance(default, int) and abs(default) >= 10_000 else f" (default {default})"


def _annotation(tp: Any) -> Any:
    """The CLI type of a field's type: ``X | None`` -> ``X``; lists stay lists (a repeatable option)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def option_parameters(*configs: type, skip: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """One keyword parameter with a ``typer.Option`` per field with help, in declaration order."""
    params, seen = [], set()
    for config in configs:
        hints = typing.get_type_hints(config)
        for f in fields(config):
            if not f.metadata.get("help") or f.name in skip or f.name in seen:
                continue
            seen.add(f.name)
            tp = _annotation(hints[f.name])
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            if tp is bool:
                decls = [flag if "/" in flag else f"{flag}/--no-{flag.removeprefix('--')}"]
                on_off = {True: " (default on)", False: " (default off)"}.get(f.default, "")
                help_text = f.metadata["help"] + on_off
            else:
                decls = [flag, *f.metadata.get("aliases", ())]
                help_text = f.metadata["help"] + _default_text(f)
            params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=tp | None,
                                            default=typer.Option(None, *decls, help=help_text)))
    return params


def warn_old_spellings(configs, argv: list[str] | None = None) -> None:
    """One warning line per old flag spelling (``aliases``) on the command line: they go in the next release."""
    from ..console import err

    given = {a.split("=", 1)[0] for a in (sys.argv[1:] if argv is None else argv)}
    for config in configs:
        for f in fields(config):
            for alias in set(f.metadata.get("aliases", ())) & given:
                new = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
                err.print(f"warning: {alias} is an old spelling of {new} and goes in the next release")


def config_options(*configs: type, skip: tuple[str, ...] = ()):
    """Decorate a command ending in ``**flags`` with the options of ``configs`` (see the module docstring)."""

    def decorate(command):
        own = inspect.signature(command, eval_str=True)
        fixed = [p for p in own.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        generated = option_parameters(*configs, skip=(*skip, *(p.name for p in fixed)))
        names = [p.name for p in generated]

        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            flags = {name: kwargs.pop(name, None) for name in names}
            warn_old_spellings(configs)
            return command(*args, **kwargs, **flags)

        wrapper.__signature__ = own.replace(parameters=[*fixed, *generated])
        wrapper.__annotations__ = {p.name: p.annotation for p in [*fixed, *generated]}
        return wrapper

    return decorate
