"""`load(spec)`: one string names a data set, as configs and the CLI write it.

    "shipped"              the CIFAR-10 subset inside the package
    "cifar10:PATH"         a cifar-10-batches-py folder (or its parent)
    "imagefolder:PATH"     ROOT/<class>/*.png|jpg, or ROOT/train/... + ROOT/test/...
    "core50:PATH"          the official CORe50 files; the Dataset carries the scenario's experiences

Loader options follow the path after a question mark, as ``key=value`` pairs joined by ``&``
(the last ``?`` in the spec starts them): ``imagefolder:~/pics?size=32x32&channels=3``,
``core50:~/core50?scenario=nc&run=2``. :func:`parse_spec` is the one place specs are read.
"""

from __future__ import annotations

import inspect
from typing import Callable

from tinycl.data.cifar import load_cifar10
from tinycl.data.core50 import load_core50
from tinycl.data.dataset import Dataset
from tinycl.data.imagefolder import load_imagefolder
from tinycl.data.shipped import load_shipped
from tinycl.errors import TinyclError

LOADERS: dict[str, Callable[..., Dataset]] = {
    "cifar10": load_cifar10,
    "imagefolder": load_imagefolder,
    "core50": load_core50,
}
KINDS = ["shipped", *LOADERS]


def register_loader(kind: str, fn: Callable[..., Dataset]) -> None:
    """Add a loader for "kind:PATH" specs; fn(path, **options) -> Dataset."""
    LOADERS[kind] = fn


def _size(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    return int(h), int(w or h)


# How option values written in a spec are read (others stay strings).
OPTION_TYPES: dict[str, Callable] = {"size": _size, "channels": int, "seed": int, "run": int, "test_every": int,
                                     "test_fraction": float}
_OPTION_FORMS = {"size": "HxW (e.g. 32x32)", "test_fraction": "a number"}


def _options(spec: str, text: str) -> dict:
    """``key=value&key=value`` -> typed options; a bad pair raises one line."""
    options = {}
    for pair in text.split("&"):
        key, eq, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key or not value:
            raise TinyclError(f"data spec '{spec}': options must be key=value pairs joined by '&', got {pair!r}")
        if key in options:
            raise TinyclError(f"data spec '{spec}': option '{key}' given twice")
        try:
            options[key] = OPTION_TYPES.get(key, str)(value)
        except ValueError:
            form = _OPTION_FORMS.get(key, "an integer")
            raise TinyclError(f"data spec '{spec}': option '{key}' must be {form}, got {value!r}") from None
    return options


def _loader(kind: str) -> Callable[..., Dataset]:
    return LOADERS[kind]


def parse_spec(spec: str, **options) -> tuple[str, str, dict]:
    """``(kind, path, options)`` of a data spec (module docstring), checked against its loader.

    ``options`` (Python callers) are merged with those written in the spec; every problem
    (unknown kind, missing path, bad or unknown option) raises one line.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise TinyclError(f"data spec must be one of {', '.join(k + ':PATH' if k != 'shipped' else k for k in KINDS)}")
    body, q, text = spec.strip().rpartition("?") if "?" in spec else (spec.strip(), "", "")
    kind, sep, path = body.partition(":")
    written = _options(spec, text) if q else {}
    both = sorted(set(written) & set(options))
    if both:
        raise TinyclError(f"data spec '{spec}': option '{both[0]}' given both in the spec and as an argument")
    options = {**written, **options}
    if kind == "shipped":
        if set(options) - {"use_cache"}:
            raise TinyclError(f"'shipped' data takes no options except use_cache, got {sorted(options)}")
        return kind, path, options
    if kind not in LOADERS:
        raise TinyclError(f"unknown data kind '{kind}' in '{spec}'; known: {', '.join(KINDS)}")
    if not sep or not path:
        raise TinyclError(f"data spec '{spec}' needs a path: {kind}:PATH")
    try:
        inspect.signature(_loader(kind)).bind(path, **options)
    except TypeError as e:
        raise TinyclError(f"bad option for '{kind}' data: {e}") from None
    return kind, path, options


def load(spec: str, **options) -> Dataset:
    """Load the data set a spec names (see the module docstring); options go to the loader,
    e.g. size=(32, 32), channels=3 for imagefolder, scenario="nicv2_391", run=0 for core50."""
    kind, path, options = parse_spec(spec, **options)
    if kind == "shipped":
        return load_shipped(path or None, **options)
    return _loader(kind)(path, **options)
