"""Small builders shared by the zoo models: argument checks, norm choice, conv blocks.

Convention: a conv gets a bias only when no normalisation layer follows it
(a bias in front of BatchNorm is cancelled by the mean subtraction).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Sequence

from torch import nn

from tinycl.errors import TinyclError

NormFn = Callable[[int], nn.Module]

NORMS = ("bn", "none")


def check_input_shape(model: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    """Return ``input_shape`` as a (C, H, W) tuple of positive ints, or raise TinyclError."""
    try:
        shape = tuple(int(v) for v in input_shape)
        ok = len(shape) == 3 and all(v >= 1 for v in shape) and all(int(v) == v for v in input_shape)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise TinyclError(f"model '{model}': input_shape must be three positive ints (C, H, W), got {input_shape!r}")
    return shape  # type: ignore[return-value]


def check_positive_int(model: str, what: str, value) -> int:
    """Return ``value`` if it is an int >= 1, else raise TinyclError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TinyclError(f"model '{model}': {what} must be a positive int, got {value!r}")
    return value


def check_width(model: str, width) -> float:
    """Return the width multiplier as a float > 0, else raise TinyclError."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise TinyclError(f"model '{model}': width must be a number > 0, got {width!r}")
    return float(width)


def scale_channels(channels: int, width: float, min_channels: int = 8) -> int:
    """Channels after a width multiplier: ``max(min_channels, int(channels * width))``.

    This is the rule of the TensorFlow MobileNetV1 reference (``depth_multiplier``
    with ``min_depth=8``); at ``width=1.0`` it returns ``channels`` unchanged.
    """
    return max(min_channels, int(channels * width))


def resolve_norm(model: str, norm: str, norm_layer: NormFn | None) -> NormFn | None:
    """The normalisation factory to use: ``norm_layer`` if given, else from ``norm``.

    ``norm="bn"`` gives ``nn.BatchNorm2d``; ``norm="none"`` gives None (no layer).
    """
    if norm_layer is not None:
        if not callable(norm_layer):
            raise TinyclError(f"model '{model}': norm_layer must be a callable(channels) -> nn.Module")
        return norm_layer
    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "none":
        return None
    raise TinyclError(f"model '{model}': unknown norm {norm!r}; allowed: {', '.join(NORMS)}")


def conv_block(cin: int, cout: int, kernel, stride=1, padding=0, groups: int = 1,
               norm_fn: NormFn | None = None, act: bool = True) -> nn.Sequential:
    """``Sequential(conv, [norm], [ReLU])`` with children named by position (0, 1, 2).

    The conv has a bias only when ``norm_fn`` is None.
    """
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding,
                                         groups=groups, bias=norm_fn is None)]
    if norm_fn is not None:
        layers.append(norm_fn(cout))
    if act:
        layers.append(nn.ReLU(inplace=False))
    return nn.Sequential(*layers)


def named(children: list[tuple[str, nn.Module]]) -> nn.Sequential:
    """A top-level ``nn.Sequential`` whose children carry the given names, in order."""
    names = [n for n, _ in children]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate child names: {names}")
    return nn.Sequential(OrderedDict(children))


def head(channels: int, num_classes: int) -> list[tuple[str, nn.Module]]:
    """Global average pool, flatten and a linear classifier: children pool, flatten, fc."""
    return [("pool", nn.AdaptiveAvgPool2d(1)),
            ("flatten", nn.Flatten()),
            ("fc", nn.Linear(channels, num_classes))]
