"""RangeNorm2d: a normalisation for hardware that needs no batch statistics (works at batch 1).

Per sample and per group of channels (``groups`` groups of ``C / groups`` channels, as
GroupNorm), over the ``m = (C / groups) * H * W`` elements of the group. Two statistics:

``stat="l1"`` (default; L1 deviation, no square root; one reciprocal per sample and group):

    mu    = mean(x),  d = x - mu
    sigma = sqrt(pi/2) * mean(|d|) + eps             (equals the std for Gaussian data)
    xhat  = d / sigma,   y = gamma[c] * xhat + beta[c]
    backward, with g = gamma[c] * dy, A = sum(g * xhat), c1 = sqrt(pi/2):
    dd    = (g - A * c1 * sign(d) / m) / sigma,   dx = dd - mean(dd)

``stat="range"`` (power-of-two range scale; no divider at all):

    mu    = mean(x)                                  (one adder tree)
    sigma = (max(x) - min(x)) / (2 * sqrt(2 ln m))   (range estimate of a Gaussian's std;
                                                      the constant is fixed per layer)
    k     = round(log2(sigma + eps)),  clamped to [-32, 32]
    xhat  = (x - mu) * 2**-k                         (a shift, no divider, no square root)
    y     = gamma[c] * xhat + beta[c]

The scale is a power of two, so it is piecewise constant in x and its derivative is zero
almost everywhere: the exact gradient has no term through the statistic (no routing of a
gradient to the argmax/argmin elements, which tie often in 8-bit data). Backward:

    g     = gamma[c] * dy
    dx    = 2**-k * (g - mean_group(g))
    dgamma[c] = sum_{n,h,w} dy * xhat,   dbeta[c] = sum_{n,h,w} dy

No running statistics: training and evaluation compute the same function.
Measured: with ``stat="range"`` resnet20 did not learn on CIFAR-10 (FP32, torch autograd,
loss stayed above ln 10 after two epochs of 1000 images) while ``"l1"`` and BatchNorm did; the
zero gradient through the scale leaves the weight norm free to grow (see docs/eta.md).
"""

from __future__ import annotations

import math

import torch

from ..errors import TinyclError

K_LIMIT = 32
STATS = ("l1", "range")
C_L1 = math.sqrt(math.pi / 2)


def range_constant(m: int) -> float:
    """``1 / (2 * sqrt(2 ln m))``: sigma per unit of range for m Gaussian samples (1 for m < 2)."""
    return 1.0 / (2.0 * math.sqrt(2.0 * math.log(m))) if m >= 2 else 1.0


def _grouped(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c = x.shape[:2]
    if c % groups:
        raise TinyclError(f"rangenorm: {c} channels do not split into {groups} groups")
    return x.reshape(n, groups, -1)


def rangenorm_shift(x: torch.Tensor, groups: int, eps: float = 1e-5) -> torch.Tensor:
    """The exponent ``k`` per (sample, group), shape ``N x groups x 1`` (float, integer-valued)."""
    xg = _grouped(x, groups)
    r = xg.amax(-1, keepdim=True) - xg.amin(-1, keepdim=True)
    sigma = r * range_constant(xg.shape[-1])
    return torch.round(torch.log2(sigma + eps)).clamp(-K_LIMIT, K_LIMIT)


def _check_stat(stat):
    if stat not in STATS:
        raise TinyclError(f"rangenorm: unknown statistic {stat!r}; allowed: {', '.join(STATS)}")


def rangenorm_forward(x, gamma, beta, groups: int, eps: float = 1e-5, stat: str = "l1"):
    """``(y, cache)``; ``cache = (xhat, scale, sign(d) or None)``, ``scale`` = 1/sigma or 2**-k,
    shape ``N x groups x 1``."""
    _check_stat(stat)
    xg = _grouped(x, groups)
    mu = xg.mean(-1, keepdim=True)
    d = xg - mu
    if stat == "l1":
        scale = 1.0 / (C_L1 * d.abs().mean(-1, keepdim=True) + eps)
        sign = torch.sign(d)
    else:
        scale = torch.exp2(-rangenorm_shift(x, groups, eps))
        sign = None
    xhat = (d * scale).reshape(x.shape)
    view = (1, -1) + (1,) * (x.dim() - 2)
    y = xhat * gamma.view(view) + beta.view(view)
    return y, (xhat, scale, sign)


def rangenorm_backward(dy, gamma, cache, groups: int):
    """``(dx, dgamma, dbeta)`` (see the module docstring)."""
    xhat, scale, sign = cache
    view = (1, -1) + (1,) * (dy.dim() - 2)
    g = _grouped(dy * gamma.view(view), groups)
    if sign is not None:   # l1: the gradient through sigma
        a = (g * _grouped(xhat, groups)).sum(-1, keepdim=True)
        g = g - a * (C_L1 / g.shape[-1]) * sign
    dx = ((g - g.mean(-1, keepdim=True)) * scale).reshape(dy.shape)
    dims = (0,) + tuple(range(2, dy.dim()))
    return dx, (dy * xhat).sum(dim=dims), dy.sum(dim=dims)


def rangenorm_ops(numel: int, channels: int) -> dict[str, int]:
    """Elementwise operations (not MACs) per step, counted from the formulas above.

    forward: sum, max, min, subtract, shift, multiply-add = 6/elem; backward_input: multiply,
    sum, subtract, shift = 4/elem; backward_weight: multiply-add for dgamma, add for dbeta = 2/elem;
    update: gamma and beta, one per parameter.
    """
    return {"forward": 6 * numel, "backward_input": 4 * numel, "backward_weight": 2 * numel,
            "update": 2 * channels}
