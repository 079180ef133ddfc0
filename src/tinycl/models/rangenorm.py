"""RangeNorm2d as a torch module (for the zoo's ``norm_layer``) and as a tinycl layer.

``norm_layer=range_norm(groups=8)`` builds any zoo model with it in place of BatchNorm;
:func:`tinycl.models.from_torch` converts it (importing this module registers the converter).
The formulas are in :mod:`tinycl.kernels.rangenorm`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import TinyclError
from ..kernels import rangenorm as K
from .convert import register_converter
from .layers import Layer, Param


def effective_groups(channels: int, groups: int) -> int:
    """Groups actually used: ``gcd(channels, groups)`` (so any channel count works)."""
    if channels < 1 or groups < 1:
        raise TinyclError(f"rangenorm needs channels >= 1 and groups >= 1, got {channels}, {groups}")
    return math.gcd(channels, groups)


class RangeNorm2d(nn.Module):
    """Per-sample, per-group range normalisation with a power-of-two scale (batch-size independent)."""

    def __init__(self, num_channels: int, groups: int = 8, eps: float = 1e-5, stat: str = "l1"):
        super().__init__()
        K._check_stat(stat)
        self.num_channels, self.eps, self.stat = num_channels, eps, stat
        self.groups = effective_groups(num_channels, groups)
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise TinyclError(f"RangeNorm2d expects {self.num_channels} channels, got shape {tuple(x.shape)}")
        return K.rangenorm_forward(x, self.weight, self.bias, self.groups, self.eps, self.stat)[0]

    def extra_repr(self) -> str:
        return f"{self.num_channels}, groups={self.groups}, eps={self.eps}, stat={self.stat}"


def range_norm(groups: int = 8, eps: float = 1e-5, stat: str = "l1"):
    """A ``norm_layer`` factory for the zoo: ``channels -> RangeNorm2d(channels, groups, eps, stat)``."""
    K._check_stat(stat)
    return lambda channels: RangeNorm2d(channels, groups, eps, stat)


class RangeNorm(Layer):
    """The tinycl layer: forward, input gradient, weight gradient (gamma, beta)."""

    kind = "rangenorm2d"

    def __init__(self, name, weight, bias, groups, eps, stat="l1"):
        super().__init__(name)
        self.params["weight"], self.params["bias"] = Param(weight), Param(bias)
        self.groups, self.eps, self.stat = groups, eps, stat

    def forward(self, x, ctx):
        g, b = self.params["weight"].compute(ctx.prec), self.params["bias"].compute(ctx.prec)
        y, cache = K.rangenorm_forward(x, g, b, self.groups, self.eps, self.stat)
        self.saved = cache if ctx.training else None
        return ctx.act(y)

    def backward(self, dy, ctx, need_input=True):
        g = self.params["weight"].compute(ctx.prec)
        dx, dg, db = K.rangenorm_backward(dy, g, self.saved, self.groups)
        self.params["weight"].accumulate(ctx.grad(dg))
        self.params["bias"].accumulate(ctx.grad(db))
        self.saved = None
        return ctx.grad(dx) if need_input else None


def _convert(m: RangeNorm2d, path: str) -> RangeNorm:
    return RangeNorm(path, m.weight.detach().clone(), m.bias.detach().clone(), m.groups, m.eps, m.stat)


register_converter(RangeNorm2d, _convert)
