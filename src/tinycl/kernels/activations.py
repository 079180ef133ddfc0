"""Pointwise activations. Backward needs only a mask (1 bit per element on a device)."""

from __future__ import annotations

import torch

from ..errors import TinyclError


def relu_forward(x: torch.Tensor) -> torch.Tensor:
    return torch.relu(x)


def relu_backward(dy: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``dx = dy * (y > 0)`` (from the output; autograd's convention at 0 gives 0)."""
    return torch.ops.aten.threshold_backward(dy, y, 0.0)  # one fused pass of dy * (y > 0)


def relu6_forward(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x, 0.0, 6.0)


def relu6_backward(dy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``dx = dy * (0 < x < 6)`` (torch's hardtanh convention: 0 at both edges)."""
    return dy.masked_fill((x <= 0) | (x >= 6), 0.0)


def leaky_relu_forward(x: torch.Tensor, slope: float = 0.01) -> torch.Tensor:
    return torch.where(x > 0, x, x * slope)


def leaky_relu_backward(dy: torch.Tensor, x: torch.Tensor, slope: float = 0.01) -> torch.Tensor:
    return torch.where(x > 0, dy, dy * slope)


def elementwise_ops(numel: int) -> dict[str, int]:
    """Operations (not MACs) of a pointwise activation: one per element per step."""
    return {"forward": numel, "backward_input": numel, "backward_weight": 0, "update": 0}


# Smooth and hard activations of mobile networks. Backward calls torch's own aten gradient
# kernels (plain kernels, no autograd), so the conventions at the kinks are torch's:
# hardsigmoid' = 1/6 on the open interval (-3, 3) and 0 at both ends; hardswish' = (2x + 3) / 6
# on the open interval (-3, 3), 0 at and below -3, 1 at and above 3 (the one-sided limits
# outside the interval, not the inner formula's -1/2 and 3/2).
# Op counts: tinycl.kernels.macs.activation_ops.

def hardsigmoid_forward(x: torch.Tensor) -> torch.Tensor:
    """``relu6(x + 3) / 6``."""
    return torch.ops.aten.hardsigmoid(x)


def hardsigmoid_backward(dy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``dx = dy / 6`` where ``-3 < x < 3``, else 0 (from the input)."""
    return torch.ops.aten.hardsigmoid_backward(dy, x)


def hardswish_forward(x: torch.Tensor) -> torch.Tensor:
    """``x * relu6(x + 3) / 6``."""
    return torch.ops.aten.hardswish(x)


def hardswish_backward(dy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``dx = dy * (2x + 3) / 6`` on ``(-3, 3)``, ``dy`` at and above 3, 0 at and below -3 (from the input)."""
    return torch.ops.aten.hardswish_backward(dy, x)


def sigmoid_forward(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x)


def sigmoid_backward(dy: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``dx = dy * y * (1 - y)`` (from the output)."""
    return torch.ops.aten.sigmoid_backward(dy, y)


def tanh_forward(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x)


def tanh_backward(dy: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``dx = dy * (1 - y * y)`` (from the output)."""
    return torch.ops.aten.tanh_backward(dy, y)


def silu_forward(x: torch.Tensor) -> torch.Tensor:
    """``x * sigmoid(x)`` (also called swish)."""
    return torch.ops.aten.silu(x)


def silu_backward(dy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``dx = dy * s * (1 + x * (1 - s))`` with ``s = sigmoid(x)`` (from the input)."""
    return torch.ops.aten.silu_backward(dy, x)


def _approximate(approximate: str) -> str:
    if approximate not in ("none", "tanh"):
        raise TinyclError(f"gelu approximate={approximate!r} is not supported (use 'none' or 'tanh')")
    return approximate


def gelu_forward(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """``x * Phi(x)`` (``approximate="none"``, erf) or its tanh approximation (``"tanh"``)."""
    return torch.ops.aten.gelu(x, approximate=_approximate(approximate))


def gelu_backward(dy: torch.Tensor, x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """``dx = dy * (Phi(x) + x * phi(x))`` (or the derivative of the tanh form), from the input."""
    return torch.ops.aten.gelu_backward(dy, x, approximate=_approximate(approximate))
