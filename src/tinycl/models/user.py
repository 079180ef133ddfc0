"""A user's own model for ``tinycl run --model FILE.py:FACTORY``.

``FILE.py`` is imported as a module and ``FACTORY`` is called with ``num_classes`` and
``input_shape`` when its signature takes them (a plain ``nn.Module`` class or function works).
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path

from torch import nn

from ..errors import TinyclError


def is_user_spec(name: str) -> bool:
    """True for ``path/to/file.py:factory``."""
    return isinstance(name, str) and ":" in name and name.split(":", 1)[0].endswith(".py")


def load_factory(spec: str):
    path, factory = spec.rsplit(":", 1)
    file = Path(path)
    if not file.is_file():
        raise TinyclError(f"model file {path} not found")
    mod_name = f"tinycl_user_{abs(hash(str(file.resolve())))}"
    if mod_name not in sys.modules:
        loader = importlib.util.spec_from_file_location(mod_name, file)
        module = importlib.util.module_from_spec(loader)
        try:
            loader.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 - the user's file failed to import
            raise TinyclError(f"model file {path} failed to import: {type(e).__name__}: {e}") from None
        sys.modules[mod_name] = module
    fn = getattr(sys.modules[mod_name], factory, None)
    if fn is None or not callable(fn):
        raise TinyclError(f"model file {path} has no callable {factory!r}")
    return fn


def build_user_model(spec: str, num_classes: int, input_shape: tuple, **kwargs) -> nn.Module:
    """The module made by the factory, with ``num_classes`` / ``input_shape`` if it takes them."""
    fn = load_factory(spec)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    args = dict(kwargs)
    if "num_classes" in params:
        args["num_classes"] = num_classes
    if "input_shape" in params:
        args["input_shape"] = tuple(input_shape)
    try:
        model = fn(**args)
    except Exception as e:  # noqa: BLE001 - the user's factory failed
        raise TinyclError(f"model factory {spec} failed: {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise TinyclError(f"model factory {spec} returned {type(model).__name__}, not an nn.Module")
    return model
