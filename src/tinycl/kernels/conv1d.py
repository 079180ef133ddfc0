"""Conv1d: forward, input gradient, weight gradient (kernel, stride, padding, groups; dilation 1).

A Conv1d is a Conv2d with H = 1: the input ``N x Cin x L`` becomes ``N x Cin x 1 x L``,
the weight ``Cout x Cin/groups x K`` becomes ``Cout x Cin/groups x 1 x K``, and every step
runs on :mod:`tinycl.kernels.conv` with stride ``(1, s)`` and padding ``(0, p)``, on either
implementation (``impl="aten"`` or ``"im2col"``; ``acc`` for native accumulation).
MACs: :func:`tinycl.kernels.macs.conv1d_macs`.
"""

from __future__ import annotations


from ..errors import TinyclError
from . import conv

__all__ = ["conv1d_forward", "conv1d_backward_input", "conv1d_backward_weight", "conv1d_backward"]


def _single(v, name: str) -> int:
    if isinstance(v, (tuple, list)):
        if len(v) != 1:
            raise TinyclError(f"conv1d {name} must be one int, got {list(v)}")
        v = v[0]
    return int(v)


def _geom(stride, padding):
    return (1, _single(stride, "stride")), (0, _single(padding, "padding"))


def _check(x_shape, w_shape):
    if len(x_shape) != 3 or len(w_shape) != 3:
        raise TinyclError(f"conv1d expects an N x C x L input and a Cout x Cin/groups x K weight, got "
                          f"{list(x_shape)} and {list(w_shape)}")


def conv1d_forward(x, w, b=None, stride=1, padding=0, groups=1, impl="aten", acc=None):
    """``y = conv1d(x, w) + b``: ``N x Cout x Lo`` with ``Lo = (L + 2p - K) // s + 1``."""
    _check(x.shape, w.shape)
    s, p = _geom(stride, padding)
    y = conv.conv2d_forward(x.unsqueeze(2), w.unsqueeze(2), b, s, p, groups, impl, acc)
    return y.squeeze(2)


def conv1d_backward_input(dy, w, x_shape, stride=1, padding=0, groups=1, impl="aten", acc=None):
    """``dL/dx`` (shape ``x_shape``) from ``dy``."""
    _check(x_shape, w.shape)
    s, p = _geom(stride, padding)
    n, c, length = x_shape
    dx = conv.conv2d_backward_input(dy.unsqueeze(2), w.unsqueeze(2), (n, c, 1, length), s, p, groups, impl, acc)
    return dx.squeeze(2)


def conv1d_backward_weight(dy, x, w_shape, stride=1, padding=0, groups=1, bias=True, impl="aten", acc=None):
    """``(dL/dw, dL/db or None)`` from ``dy`` and the forward input ``x``."""
    _check(x.shape, w_shape)
    s, p = _geom(stride, padding)
    cout, cg, k = w_shape
    dw, db = conv.conv2d_backward_weight(dy.unsqueeze(2), x.unsqueeze(2), (cout, cg, 1, k), s, p, groups, bias,
                                         impl, acc)
    return dw.squeeze(2), db


def conv1d_backward(dy, x, w, stride=1, padding=0, groups=1, bias=True, need_input=True, impl="aten", acc=None):
    """``(dx or None, dw, db or None)`` in one call (one fused library call on ``"aten"``)."""
    _check(x.shape, w.shape)
    s, p = _geom(stride, padding)
    dx, dw, db = conv.conv2d_backward(dy.unsqueeze(2), x.unsqueeze(2), w.unsqueeze(2), s, p, groups, bias,
                                      need_input, impl, acc)
    return (dx.squeeze(2) if dx is not None else None), dw.squeeze(2), db
