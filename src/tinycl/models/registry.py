"""A timm-like model registry: ``@register_model(name)``, ``create``, ``list_models``.

Every zoo model is a top-level ``nn.Sequential`` whose named children are its split
points, in execution order (see :func:`split_points`). A latent layer is named by a
top-level child: the front is the children up to and including it, the back the rest.

Builders are plain functions ``fn(num_classes=..., input_shape=(C, H, W), norm="bn",
norm_layer=None, **model_specific) -> nn.Sequential``; their keyword defaults are the
model's defaults (see :func:`default_config`).
"""

from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from tinycl.errors import TinyclError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_ZOO_LOADED = False


def register_model(name: str):
    """Decorator that registers a model builder under ``name``."""
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise TinyclError(f"model name '{name}' is already registered")
        _REGISTRY[name] = fn
        return fn
    return deco


def _load_zoo() -> None:
    # Imported lazily: the zoo modules import this module for the decorator.
    global _ZOO_LOADED
    if not _ZOO_LOADED:
        import tinycl.models.zoo  # noqa: F401  (registers the built-in models)
        _ZOO_LOADED = True


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    _load_zoo()
    return sorted(_REGISTRY)


def _builder(name: str) -> Callable[..., nn.Module]:
    _load_zoo()
    if name not in _REGISTRY:
        raise TinyclError(f"unknown model '{name}'; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def default_config(name: str) -> dict:
    """The builder's keyword defaults, e.g. ``{"num_classes": 10, "input_shape": (3, 32, 32), ...}``."""
    sig = inspect.signature(_builder(name))
    return {k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}


def create(name: str, num_classes: int | None = None, input_shape: tuple[int, int, int] | None = None,
           **kwargs) -> nn.Sequential:
    """Build model ``name``; ``None`` means the model's default for that argument.

    Raises TinyclError for an unknown name, an unknown keyword, a bad value, or an
    input too small for the model's downsampling. The returned module carries
    ``zoo_name``, ``input_shape`` (C, H, W) and ``num_classes`` attributes.
    """
    from tinycl.models.user import build_user_model, is_user_spec

    if is_user_spec(name):
        if num_classes is None or input_shape is None:
            raise TinyclError(f"model {name}: give num_classes and input_shape for a user model")
        model = build_user_model(name, num_classes, input_shape, **kwargs)
        out = _output_shape(model, tuple(input_shape), name)
        if out != (num_classes,):
            raise TinyclError(f"model {name}: output shape {tuple(out)} is not ({num_classes},)")
        model.zoo_name, model.input_shape, model.num_classes = name, tuple(input_shape), int(num_classes)
        return model
    fn = _builder(name)
    params = inspect.signature(fn).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        allowed = [k for k in params if k not in ("num_classes", "input_shape")]
        raise TinyclError(f"model '{name}': unknown argument(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if input_shape is not None:
        kwargs["input_shape"] = input_shape
    model = fn(**kwargs)
    cfg = {**default_config(name), **kwargs}
    shape = tuple(int(v) for v in cfg["input_shape"])
    out = _output_shape(model, shape, name)
    if out != (cfg["num_classes"],):
        raise TinyclError(f"model '{name}': output shape {out} is not ({cfg['num_classes']},)")
    model.zoo_name = name
    model.input_shape = shape
    model.num_classes = int(cfg["num_classes"])
    return model


def _output_shape(model: nn.Module, shape: tuple, name: str) -> tuple:
    """One sample's output shape, from the captured graph; a model with a layer tinycl cannot train
    (e.g. a GroupNorm ``norm_layer``) is still built: its shape comes from running it once."""
    import torch

    from tinycl.errors import UnsupportedLayerError
    from tinycl.graph import capture
    try:
        graph = capture(model, shape)
        return tuple(graph[graph.output].shape)
    except UnsupportedLayerError:
        pass
    except TinyclError as e:
        raise TinyclError(f"model '{name}' with input {'x'.join(map(str, shape))}: {e}") from None
    was = model.training
    try:
        with torch.no_grad():
            return tuple(model.eval()(torch.zeros(1, *shape)).shape[1:])
    except Exception as e:  # noqa: BLE001 - the model does not run on this shape
        raise TinyclError(f"model '{name}' with input {'x'.join(map(str, shape))}: {str(e).splitlines()[0]}") from None
    finally:
        model.train(was)


def split_points(module: nn.Module) -> list[str]:
    """Names of the top-level children of a zoo model, in execution order."""
    if not isinstance(module, nn.Sequential):
        raise TinyclError(f"split_points needs a top-level nn.Sequential (a zoo model), got {type(module).__name__}")
    return [name for name, _ in module.named_children()]
