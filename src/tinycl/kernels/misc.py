"""Shape and routing primitives: flatten, residual add, dropout, stochastic depth."""

from __future__ import annotations

import torch

from ..errors import TinyclError


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


def stochastic_depth_forward(x: torch.Tensor, p: float, mode: str = "row", training: bool = True,
                             generator: torch.Generator | None = None):
    """``torchvision.ops.stochastic_depth``: returns ``(y, mask)``; ``mask`` is None when it is the identity.

    ``mode="row"`` drops each sample's whole residual branch with probability ``p`` (mask
    ``N x 1 x ... x 1``); ``"batch"`` drops it for the whole batch (mask ``1 x ... x 1``).
    Kept entries are scaled by ``1 / (1 - p)``. Identity in eval or with ``p == 0``. The mask
    is drawn with ``bernoulli_(1 - p, generator=generator)``, as torchvision draws it.
    """
    if not 0.0 <= p <= 1.0:
        raise TinyclError(f"stochastic depth probability must be in [0, 1], got {p}")
    if mode not in ("row", "batch"):
        raise TinyclError(f"stochastic depth mode must be 'row' or 'batch', got {mode!r}")
    if not training or p == 0.0:
        return x, None
    survival = 1.0 - p
    size = [x.shape[0]] + [1] * (x.dim() - 1) if mode == "row" else [1] * x.dim()
    mask = x.new_empty(size).bernoulli_(survival, generator=generator)
    if survival > 0.0:
        mask.div_(survival)
    return x * mask, mask


def stochastic_depth_backward(dy: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``dx = dy * mask`` (``dy`` when the forward was the identity)."""
    return dy if mask is None else dy * mask
