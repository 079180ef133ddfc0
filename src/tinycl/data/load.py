"""`load(spec)`: one string names a data set, as configs and the CLI write it.

    "shipped"              the CIFAR-10 subset inside the package
    "cifar10:PATH"         a cifar-10-batches-py folder (or its parent)
    "imagefolder:PATH"     ROOT/<class>/*.png|jpg, or ROOT/train/... + ROOT/test/...
    "core50:PATH"          the official CORe50 files; the Dataset carries the scenario's experiences
"""

from __future__ import annotations

import importlib
import inspect
from typing import Callable

from tinycl.data.cifar import load_cifar10
from tinycl.data.dataset import Dataset
from tinycl.data.imagefolder import load_imagefolder
from tinycl.data.shipped import load_shipped
from tinycl.errors import TinyclError

LOADERS: dict[str, Callable[..., Dataset]] = {
    "cifar10": load_cifar10,
    "imagefolder": load_imagefolder,
}
# Kinds whose loader lives with its scenario code; imported on first use (module: function).
LAZY_LOADERS = {"core50": ("tinycl.cl.core50", "load_core50")}
KINDS = ["shipped", *LOADERS, *LAZY_LOADERS]


def register_loader(kind: str, fn: Callable[..., Dataset]) -> None:
    """Add a loader for "kind:PATH" specs; fn(path, **options) -> Dataset."""
    LOADERS[kind] = fn


def load(spec: str, **options) -> Dataset:
    """Load the data set a spec names (see the module docstring); options go to the loader,
    e.g. size=(32, 32), channels=3 for imagefolder, scenario="nicv2_391", run=0 for core50."""
    if not isinstance(spec, str) or not spec.strip():
        raise TinyclError(f"data spec must be one of {', '.join(k + ':PATH' if k != 'shipped' else k for k in KINDS)}")
    kind, sep, path = spec.strip().partition(":")
    if kind == "shipped":
        if set(options) - {"use_cache"}:
            raise TinyclError(f"'shipped' data takes no options except use_cache, got {sorted(options)}")
        return load_shipped(path or None, **options)
    if kind in LAZY_LOADERS and kind not in LOADERS:
        module, name = LAZY_LOADERS[kind]
        LOADERS[kind] = getattr(importlib.import_module(module), name)
    if kind not in LOADERS:
        raise TinyclError(f"unknown data kind '{kind}' in '{spec}'; known: {', '.join(KINDS)}")
    if not sep or not path:
        raise TinyclError(f"data spec '{spec}' needs a path: {kind}:PATH")
    fn = LOADERS[kind]
    try:
        inspect.signature(fn).bind(path, **options)
    except TypeError as e:
        raise TinyclError(f"bad option for '{kind}' data: {e}") from None
    return fn(path, **options)
