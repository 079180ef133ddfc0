"""Linear: ``y = x · Wᵀ + b``; x ``N x Fin``, W ``Fout x Fin``."""

from __future__ import annotations

from functools import partial

import torch

from .macs import linear_macs
from .matmul import matmul, matmul_native

__all__ = ["linear_forward", "linear_backward_input", "linear_backward_weight", "linear_macs"]


def _mm(acc):
    return matmul if acc is None else partial(matmul_native, fmt=acc)


def linear_forward(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, acc: str | None = None):
    """``y = x Wᵀ + b``; with ``acc`` every partial sum is rounded to that format."""
    if acc is None:
        return torch.addmm(b, x, w.t()) if b is not None else x @ w.t()
    y = _mm(acc)(x, w.t())
    return y if b is None else y + b


def linear_backward_input(dy: torch.Tensor, w: torch.Tensor, acc: str | None = None) -> torch.Tensor:
    """``dx = dy · W`` (``N x Fin``)."""
    return _mm(acc)(dy, w)


def linear_backward_weight(dy: torch.Tensor, x: torch.Tensor, bias: bool = True, acc: str | None = None):
    """``(dW = dyᵀ · x, db = Σ_n dy)``; db is None without bias."""
    dw = _mm(acc)(dy.t(), x)
    if not bias:
        return dw, None
    db = dy.sum(0) if acc is None else _mm(acc)(dy.t(), dy.new_ones(dy.shape[0], 1)).reshape(-1)
    return dw, db
