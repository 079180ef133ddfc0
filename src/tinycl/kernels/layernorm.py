"""LayerNorm over the last k dims; forward, input gradient, weight gradient (gamma, beta).

Calls PyTorch's fused native kernels directly (``native_layer_norm`` and its backward; no
autograd). Statistics are per sample over ``normalized_shape`` (biased variance), as torch.
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


def layernorm_forward(x, normalized_shape, gamma=None, beta=None, eps: float = 1e-5):
    """Returns ``(y, cache)``; ``cache = (x, mean, rstd)`` feeds the backward steps.

    ``y = (x - mean) * rstd * gamma + beta`` with ``rstd = 1 / sqrt(var + eps)``.
    """
    shape = [int(s) for s in normalized_shape]
    _check(x, shape)
    y, mean, rstd = torch.ops.aten.native_layer_norm(x, shape, gamma, beta, eps)
    return y, (x, mean, rstd)


def _backward(dy, normalized_shape, gamma, beta, cache, mask):
    x, mean, rstd = cache
    if not any(mask):
        return None, None, None
    out = torch.ops.aten.native_layer_norm_backward(dy, x, [int(s) for s in normalized_shape], mean, rstd,
                                                    gamma, beta, mask)
    return tuple(o if m else None for o, m in zip(out, mask))


def layernorm_backward(dy, normalized_shape, gamma, beta, cache, need_input: bool = True):
    """``(dx or None, dgamma or None, dbeta or None)`` in one fused call.

    ``dx = rstd * (g - mean(g) - xhat * mean(g * xhat))`` with ``g = dy * gamma``, means over
    the normalized dims; ``dgamma = sum(dy * xhat)``, ``dbeta = sum(dy)`` over the other dims.
    """
    return _backward(dy, normalized_shape, gamma, beta, cache, [need_input, gamma is not None, beta is not None])


def layernorm_backward_input(dy, normalized_shape, gamma, cache):
    """``dL/dx`` alone."""
    return _backward(dy, normalized_shape, gamma, None, cache, [True, False, False])[0]


def layernorm_backward_weight(dy, normalized_shape, gamma, beta, cache):
    """``(dgamma or None, dbeta or None)`` alone."""
    _, dg, db = _backward(dy, normalized_shape, gamma, beta, cache, [False, gamma is not None, beta is not None])
    return dg, db
