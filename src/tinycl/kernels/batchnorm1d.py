"""BatchNorm1d on ``N x C`` or ``N x C x L`` inputs: the 2d batch-norm steps of
:mod:`tinycl.kernels.norm` on a reshaped view (``N x C x L x 1``), so the statistics per
channel run over N (and L) exactly as torch's BatchNorm1d.

Training uses batch statistics and updates the running stats in place like torch
(unbiased variance over N*L values, ``running = (1 - momentum) * running + momentum * batch``);
``running_mean`` / ``running_var`` ``None`` skips the update (``track_running_stats=False``).
``gamma`` / ``beta`` ``None`` (``affine=False``) act as 1 and 0 and get ``None`` gradients.
``impl="aten"`` calls torch's fused kernels; ``"explicit"`` the readable formulas.
Op counts: :func:`tinycl.kernels.norm.batchnorm_ops`.
"""

from __future__ import annotations

import torch

from ..errors import TinyclError
from . import norm

__all__ = ["batchnorm1d_forward_train", "batchnorm1d_backward_train", "batchnorm1d_forward_eval",
           "batchnorm1d_backward_eval"]


def _as4d(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 2:
        return x.reshape(x.shape[0], x.shape[1], 1, 1)
    if x.dim() == 3:
        return x.reshape(x.shape[0], x.shape[1], x.shape[2], 1)
    raise TinyclError(f"BatchNorm1d expects an N x C or N x C x L input, got shape {list(x.shape)}")


def _affine(x, gamma, beta):
    c = x.shape[1]
    g = gamma if gamma is not None else x.new_ones(c)
    b = beta if beta is not None else x.new_zeros(c)
    return g, b


def batchnorm1d_forward_train(x, gamma, beta, running_mean=None, running_var=None, eps: float = 1e-5,
                              momentum: float = 0.1, impl: str = "aten"):
    """Batch statistics; returns ``(y, cache)`` for :func:`batchnorm1d_backward_train`."""
    x4 = _as4d(x)
    count = x4.shape[0] * x4.shape[2]
    if count <= 1:
        raise TinyclError(f"BatchNorm1d in training needs more than 1 value per channel, got input shape "
                          f"{list(x.shape)}")
    g, b = _affine(x, gamma, beta)
    if _impl(impl) == "aten":
        y, inner = norm.batchnorm_train_aten(x4, g, b, running_mean, running_var, eps, momentum)
    else:
        y, inner = norm.batchnorm_forward_train(x4, g, b, eps)
        if running_mean is not None and running_var is not None:
            norm.batchnorm_update_running(running_mean, running_var, inner[2], inner[3], count, momentum)
    return y.reshape(x.shape), (impl, tuple(x.shape), inner)


def batchnorm1d_backward_train(dy, gamma, beta, cache, eps: float = 1e-5):
    """``(dx, dgamma or None, dbeta or None)`` through the batch statistics."""
    impl, shape, inner = cache
    dy4 = _as4d(dy)
    g, _ = _affine(dy4, gamma, beta)
    if impl == "aten":
        dx, dg, db = norm.batchnorm_backward_aten(dy4, g, inner, eps)
    else:
        dx, dg, db = norm.batchnorm_backward_train(dy4, g, inner)
    return dx.reshape(shape), (dg if gamma is not None else None), (db if beta is not None else None)


def batchnorm1d_forward_eval(x, gamma, beta, running_mean, running_var, eps: float = 1e-5, impl: str = "aten"):
    """Running statistics: an affine map per channel. Returns ``y``."""
    x4 = _as4d(x)
    g, b = _affine(x, gamma, beta)
    if _impl(impl) == "aten":
        y = norm.batchnorm_eval_aten(x4, g, b, running_mean, running_var, eps)
    else:
        y = norm.batchnorm_forward_eval(x4, g, b, running_mean, running_var, eps)[0]
    return y.reshape(x.shape)


def batchnorm1d_backward_eval(dy, x, gamma, beta, running_mean, running_var, eps: float = 1e-5,
                              impl: str = "aten"):
    """``(dx, dgamma or None, dbeta or None)`` through the frozen running statistics."""
    dy4, x4 = _as4d(dy), _as4d(x)
    g, _ = _affine(x, gamma, beta)
    if _impl(impl) == "aten":
        dx, dg, db = norm.batchnorm_backward_eval_aten(dy4, x4, g, running_mean, running_var, eps)
    else:
        dx, dg, db = norm.batchnorm_backward_eval(dy4, x4, g, running_mean, torch.rsqrt(running_var + eps))
    return dx.reshape(x.shape), (dg if gamma is not None else None), (db if beta is not None else None)


def _impl(impl: str) -> str:
    if impl not in ("aten", "explicit"):
        raise TinyclError(f"batch norm impl {impl!r} is not one of 'aten', 'explicit'")
    return impl
