"""Source adapters, registered by name: each turns one raw file into records (title, text, meta).

Add a format by writing a module with a class decorated by :func:`register_adapter`; users can also register
their own from a plugin module (``cmtp extract --plugin mypkg.adapters``, imported on the driver and again on
every worker). Adapter options are set with ``--adapter-option KEY=VALUE``.
"""

from __future__ import annotations

import importlib

from .base import ADAPTERS, Adapter, get_adapter, register_adapter

for _module in ["wudao", "zhihu", "baike_qa", "csl", "news", "xlsum", "lcsts", "generic"]:
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["ADAPTERS", "Adapter", "get_adapter", "register_adapter"]
