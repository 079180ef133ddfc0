"""The strategies of ``tinycl run`` (config ``strategy:``): one file each in this folder.

Every module here is imported, and each class decorated with :func:`base.register` becomes
available under its ``name``. docs/strategies.md shows how to write one.
"""

from __future__ import annotations

import importlib
import pkgutil

from ...errors import TinyclError
from .base import REGISTRY, Strategy, check_options, register

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")


def strategy_class(name: str) -> type:
    """The strategy class registered as ``name``."""
    if name not in REGISTRY:
        raise TinyclError(f"unknown strategy {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


__all__ = ["REGISTRY", "Strategy", "check_options", "names", "register", "strategy_class"]
