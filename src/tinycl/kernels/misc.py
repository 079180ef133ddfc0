"""Shape and routing primitives: flatten, residual add, dropout."""

from __future__ import annotations

import torch


def flatten_forward(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def flatten_backward(dy: torch.Tensor, x_shape) -> torch.Tensor:
    return dy.reshape(x_shape)


def add_forward(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Residual add; its backward passes ``dy`` unchanged to both branches."""
    return a + b


def dropout_forward(x: torch.Tensor, p: float, generator: torch.Generator | None = None):
    """Inverted dropout: returns ``(y, mask)`` with ``mask`` in {0, 1/(1-p)}."""
    if p <= 0.0:
        return x, None
    if p >= 1.0:
        return torch.zeros_like(x), torch.zeros_like(x)
    keep = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device) >= p
    mask = keep.to(x.dtype) / (1.0 - p)
    return x * mask, mask


def dropout_backward(dy: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return dy if mask is None else dy * mask


def elementwise_ops(numel: int, backward: bool = True) -> dict[str, int]:
    """Operations of a residual add or dropout: one per element forward (and backward)."""
    return {"forward": numel, "backward_input": numel if backward else 0, "backward_weight": 0, "update": 0}
