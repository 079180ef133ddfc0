"""Pointwise activations. Backward needs only a mask (1 bit per element on a device)."""

from __future__ import annotations

import torch


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
