"""LayerNorm over the last k dims; forward, input gradient, weight gradient (gamma, beta).

Two implementations of the same steps, sharing one cache ``(x, mean, rstd)``:
``impl="aten"`` calls PyTorch's fused native kernels directly (``native_layer_norm`` and its
backward; no autograd); ``impl="explicit"`` runs the formulas below. Statistics are per sample over ``normalized_shape`` (biased variance), as torch.
``gamma`` / ``beta`` may be ``None`` (``elementwise_affine=False`` or ``bias=False``): then
their gradients are ``None``. Op counts: :func:`tinycl.kernels.macs.layernorm_ops`.
"""

from __future__ import annotations

import torch

from ..errors import TinyclError

__all__ = ["layernorm_forward", "layernorm_backward", "layernorm_backward_input", "layernorm_backward_weight"]


def _check(x, normalized_shape):
    k = len(normalized_shape)
    if k == 0 or k > x.dim() or tuple(x.shape[-k:]) != tuple(normalized_shape):
        raise TinyclError(f"layer norm over {list(normalized_shape)} does not match an input of shape "
                          f"{list(x.shape)}")


def _impl(impl: str) -> str:
    if impl not in ("aten", "explicit"):
        raise TinyclError(f"layer norm impl {impl!r} is not one of 'aten', 'explicit'")
    return impl


def layernorm_forward(x, normalized_shape, gamma=None, beta=None, eps: float = 1e-5, impl: str = "aten"):
    """Returns ``(y, cache)``; ``cache = (x, mean, rstd)`` feeds the backward steps.

    ``y = (x - mean) * rstd * gamma + beta`` with ``rstd = 1 / sqrt(var + eps)``; ``mean`` and
    ``rstd`` keep the normalized dims with size 1.
    """
    shape = [int(s) for s in normalized_shape]
    _check(x, shape)
    if _impl(impl) == "aten":
        y, mean, rstd = torch.ops.aten.native_layer_norm(x, shape, gamma, beta, eps)
        return y, (x, mean, rstd)
    dims = tuple(range(x.dim() - len(shape), x.dim()))
    mean = x.mean(dims, keepdim=True)
    xc = x - mean
    rstd = torch.rsqrt((xc * xc).mean(dims, keepdim=True) + eps)
    y = xc * rstd
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y, (x, mean, rstd)


def _backward_explicit(dy, k, gamma, cache, mask):
    """The formulas of :func:`layernorm_backward` over the last ``k`` dims."""
    x, mean, rstd = cache
    norm_dims = tuple(range(x.dim() - k, x.dim()))
    lead_dims = tuple(range(x.dim() - k))
    xhat = (x - mean) * rstd
    dx = dg = db = None
    if mask[0]:
        g = dy if gamma is None else dy * gamma
        dx = rstd * (g - g.mean(norm_dims, keepdim=True) - xhat * (g * xhat).mean(norm_dims, keepdim=True))
    if mask[1]:
        dg = (dy * xhat).sum(lead_dims) if lead_dims else dy * xhat
    if mask[2]:
        db = dy.sum(lead_dims) if lead_dims else dy.clone()
    return dx, dg, db


def _backward(dy, normalized_shape, gamma, beta, cache, mask, impl):
    if not any(mask):
        return None, None, None
    if _impl(impl) == "explicit":
        return _backward_explicit(dy, len(normalized_shape), gamma, cache, mask)
    x, mean, rstd = cache
    out = torch.ops.aten.native_layer_norm_backward(dy, x, [int(s) for s in normalized_shape], mean, rstd,
                                                    gamma, beta, mask)
    return tuple(o if m else None for o, m in zip(out, mask))


def layernorm_backward(dy, normalized_shape, gamma, beta, cache, need_input: bool = True, impl: str = "aten"):
    """``(dx or None, dgamma or None, dbeta or None)`` in one fused call.

    ``dx = rstd * (g - mean(g) - xhat * mean(g * xhat))`` with ``g = dy * gamma``, means over
    the normalized dims; ``dgamma = sum(dy * xhat)``, ``dbeta = sum(dy)`` over the other dims.
    """
    mask = [need_input, gamma is not None, beta is not None]
    return _backward(dy, normalized_shape, gamma, beta, cache, mask, impl)


def layernorm_backward_input(dy, normalized_shape, gamma, cache, impl: str = "aten"):
    """``dL/dx`` alone."""
    return _backward(dy, normalized_shape, gamma, None, cache, [True, False, False], impl)[0]


def layernorm_backward_weight(dy, normalized_shape, gamma, beta, cache, impl: str = "aten"):
    """``(dgamma or None, dbeta or None)`` alone."""
    mask = [False, gamma is not None, beta is not None]
    _, dg, db = _backward(dy, normalized_shape, gamma, beta, cache, mask, impl)
    return dg, db
