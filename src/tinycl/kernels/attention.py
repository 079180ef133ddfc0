"""Attention primitives: the product of two activations and scaled dot-product attention.

``matmul_*``: ``a @ b`` as ``torch.matmul`` (1-d operands, broadcasting of the leading dims);
``sdpa_*``: ``softmax(q @ k^T * scale + mask) @ v`` with an optional additive float mask (any
shape that broadcasts to ``(..., L, S)``), a boolean mask or ``is_causal``; ``take_*``: indexing
with an integer tensor along one dimension (attention-bias tables). Forward and input gradients,
no autograd. Op counts: :func:`tinycl.graph.counts.node_counts`.
"""

from __future__ import annotations

import math

import torch

from ..errors import TinyclError
from .elementwise import unbroadcast

__all__ = ["matmul_forward", "matmul_backward", "softmax_forward", "softmax_backward", "sdpa_forward",
           "sdpa_backward", "take_forward", "take_backward"]


def _as_matrices(a: torch.Tensor, b: torch.Tensor):
    """Operands of rank >= 2 (a 1-d ``a`` is a row, a 1-d ``b`` a column), as torch.matmul does."""
    if a.dim() == 0 or b.dim() == 0:
        raise TinyclError("matmul needs operands with at least one dimension")
    return (a.unsqueeze(0) if a.dim() == 1 else a), (b.unsqueeze(-1) if b.dim() == 1 else b)


def matmul_forward(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b``: shapes ``(..., M, K) @ (..., K, N) -> (..., M, N)``, leading dims broadcast."""
    a2, b2 = _as_matrices(a, b)
    if a2.shape[-1] != b2.shape[-2]:
        raise TinyclError(f"matmul of shapes {list(a.shape)} and {list(b.shape)}: inner sizes differ")
    y = torch.matmul(a2, b2)
    if b.dim() == 1:
        y = y.squeeze(-1)
    if a.dim() == 1:
        y = y.squeeze(-2 if b.dim() > 1 else -1)
    return y


def matmul_backward(dy: torch.Tensor, a: torch.Tensor, b: torch.Tensor, need_a=True, need_b=True):
    """``(da, db)`` of ``y = a @ b``: ``da = dy @ b^T``, ``db = a^T @ dy``, each summed over the
    leading dims its operand was broadcast along (None where not needed)."""
    a2, b2 = _as_matrices(a, b)
    g = dy
    if b.dim() == 1:
        g = g.unsqueeze(-1)
    if a.dim() == 1:
        g = g.unsqueeze(-2)
    da = db = None
    if need_a:
        da = unbroadcast(torch.matmul(g, b2.transpose(-1, -2)), a2.shape).reshape(a.shape)
    if need_b:
        db = unbroadcast(torch.matmul(a2.transpose(-1, -2), g), b2.shape).reshape(b.shape)
    return da, db


def softmax_forward(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``exp(x - max) / sum(exp(x - max))`` along ``dim`` (a row of ``-inf`` gives zeros, not NaN)."""
    m = x.amax(dim, keepdim=True).clamp_min(torch.finfo(x.dtype).min)
    e = torch.exp(x - m)
    s = e.sum(dim, keepdim=True)
    return e / torch.where(s > 0, s, torch.ones_like(s))


def softmax_backward(dy: torch.Tensor, y: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``dx = y * (dy - sum(dy * y))`` along ``dim``, from the forward's output ``y``."""
    return y * (dy - (dy * y).sum(dim, keepdim=True))


def _scores_mask(q, k, mask, causal):
    """The additive mask of the scores (``None`` when there is none): float as given, boolean and
    causal as 0 / -inf."""
    L, S = q.shape[-2], k.shape[-2]
    if causal and mask is not None:
        raise TinyclError("scaled_dot_product_attention: give attn_mask or is_causal, not both")
    if causal:
        keep = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
        return torch.zeros(L, S, dtype=q.dtype, device=q.device).masked_fill(~keep, float("-inf"))
    if mask is not None and mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, float("-inf"))
    return mask


def sdpa_forward(q, k, v, mask=None, causal: bool = False, scale: float | None = None):
    """``(y, p)``: ``y = p @ v`` with ``p = softmax(q @ k^T * scale + mask)`` along the keys.

    Shapes ``q (..., L, E)``, ``k (..., S, E)``, ``v (..., S, Ev)``, leading dims broadcast;
    ``scale`` defaults to ``1 / sqrt(E)``. ``p`` is what :func:`sdpa_backward` needs."""
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise TinyclError(f"scaled_dot_product_attention: shapes q {list(q.shape)}, k {list(k.shape)}, "
                          f"v {list(v.shape)} do not fit")
    s = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    scores = torch.matmul(q, k.transpose(-1, -2)) * s
    add = _scores_mask(q, k, mask, causal)
    if add is not None:
        scores = scores + add
    p = softmax_forward(scores, -1)
    return torch.matmul(p, v), p


def sdpa_backward(dy, q, k, v, p, scale: float | None = None, mask_shape=None):
    """``(dq, dk, dv, dmask)`` of :func:`sdpa_forward` from its ``p``; ``dmask`` (the gradient of an
    additive float mask of shape ``mask_shape``) is None when ``mask_shape`` is None."""
    s = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    dv = unbroadcast(torch.matmul(p.transpose(-1, -2), dy), v.shape)
    dscores = softmax_backward(torch.matmul(dy, v.transpose(-1, -2)), p, -1)
    dq = unbroadcast(torch.matmul(dscores, k) * s, q.shape)
    dk = unbroadcast(torch.matmul(dscores.transpose(-1, -2), q) * s, k.shape)
    dmask = None if mask_shape is None else unbroadcast(dscores, tuple(mask_shape))
    return dq, dk, dv, dmask


def take_forward(x: torch.Tensor, index: torch.Tensor, dim: int) -> torch.Tensor:
    """``x[:, ..., index, ...]`` with an integer tensor ``index`` at ``dim`` (the relative-position
    attention biases of LeViT / EfficientFormer): ``index``'s shape replaces dimension ``dim``."""
    if index.is_floating_point() or index.dtype == torch.bool:
        raise TinyclError(f"indexing needs an integer index tensor, got {index.dtype}")
    y = x.index_select(dim, index.reshape(-1))
    return y.reshape(*x.shape[:dim], *index.shape, *x.shape[dim + 1:])


def take_backward(dy: torch.Tensor, x_shape, index: torch.Tensor, dim: int) -> torch.Tensor:
    """Gradient of :func:`take_forward`: ``dy`` summed into the entries it read (repeats add up)."""
    flat = dy.reshape(*x_shape[:dim], -1, *x_shape[dim + 1:])
    return dy.new_zeros(x_shape).index_add_(dim, index.reshape(-1), flat)
