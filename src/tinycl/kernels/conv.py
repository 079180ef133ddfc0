"""Conv2d: forward, input gradient, weight gradient (any kernel, stride, padding, groups).

Three implementations of the same three steps:

- ``"aten"``: PyTorch's native CPU/CUDA convolution kernels (oneDNN on x86), called
  directly, without autograd. The fast path.
- ``"im2col"``: the device algorithm (PULP-TrainLib): an im2col buffer and one matmul
  per step. Forward ``Y = W · cols``; weight gradient ``dW = dY · colsᵀ``; input gradient
  as the convolution of the zero-inserted, padded ``dY`` with the flipped, transposed
  kernel (im2row of dY), so each output is one dot product.
- ``"native"`` is ``"im2col"`` with :func:`matmul_native`: every partial sum rounded.

Shapes: x ``N x Cin x H x W``, w ``Cout x Cin/groups x Kh x Kw``, y ``N x Cout x Ho x Wo``.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from .macs import conv2d_macs, conv_out_size, pair
from .matmul import matmul, matmul_native

__all__ = ["conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight", "conv2d_backward",
           "conv2d_macs", "im2col"]

_pair = pair


def im2col(x: torch.Tensor, kernel, stride, padding) -> torch.Tensor:
    """The im2col buffer ``N x (C*Kh*Kw) x (Ho*Wo)`` of ``x``; bytes = 4 * numel in FP32."""
    return F.unfold(x, _pair(kernel), padding=_pair(padding), stride=_pair(stride))


def _mm(fmt):
    return matmul if fmt is None else partial(matmul_native, fmt=fmt)


def _conv_mm(x, w, stride, padding, groups, mm):
    """Convolution as im2col + one batched matmul per group (no bias)."""
    n, cin, h, wd = x.shape
    cout, cg, kh, kw = w.shape
    ho = conv_out_size(h, kh, stride[0], padding[0])
    wo = conv_out_size(wd, kw, stride[1], padding[1])
    cols = im2col(x, (kh, kw), stride, padding).view(n, groups, cg * kh * kw, ho * wo)
    wm = w.reshape(groups, cout // groups, cg * kh * kw)
    y = mm(wm.unsqueeze(0), cols)  # n, g, cout/g, L
    return y.reshape(n, cout, ho, wo)


def conv2d_forward(x, w, b=None, stride=1, padding=0, groups=1, impl="aten", acc=None):
    """``y = conv(x, w) + b``. ``acc`` names a format for native accumulation (implies im2col)."""
    if stride.__class__ is not tuple or padding.__class__ is not tuple:  # layers pass tuples already
        stride, padding = _pair(stride), _pair(padding)
    if acc is None and impl == "aten":
        return torch.ops.aten.convolution(x, w, b, stride, padding, (1, 1), False, (0, 0), groups)
    y = _conv_mm(x, w, stride, padding, groups, _mm(acc))
    return y if b is None else y + b.view(1, -1, 1, 1)


def _transposed_kernel(w, groups):
    """Kernel of the input-gradient conv: per group, swap in/out channels and flip 180 degrees."""
    cout, cg, kh, kw = w.shape
    wt = w.reshape(groups, cout // groups, cg, kh, kw).transpose(1, 2)
    return wt.reshape(groups * cg, cout // groups, kh, kw).flip(-1, -2)


def _dilate_pad(dy, x_hw, kernel, stride, padding):
    """Zero-insert ``dy`` by the stride and pad it so a stride-1 conv yields ``x_hw``."""
    n, c, ho, wo = dy.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if sh > 1 or sw > 1:
        z = dy.new_zeros(n, c, (ho - 1) * sh + 1, (wo - 1) * sw + 1)
        z[:, :, ::sh, ::sw] = dy
        dy = z
    top, left = kh - 1 - ph, kw - 1 - pw
    bottom = x_hw[0] + kh - 1 - top - dy.shape[2]
    right = x_hw[1] + kw - 1 - left - dy.shape[3]
    return F.pad(dy, (left, right, top, bottom))  # negative pads crop


def conv2d_backward_input(dy, w, x_shape, stride=1, padding=0, groups=1, impl="aten", acc=None):
    """``dL/dx`` (shape ``x_shape``) from ``dy = dL/dy``."""
    stride, padding = _pair(stride), _pair(padding)
    if acc is None and impl == "aten":
        empty = dy.new_empty(x_shape)  # only its shape is read
        return torch.ops.aten.convolution_backward(dy, empty, w, None, stride, padding, (1, 1), False,
                                                   (0, 0), groups, (True, False, False))[0]
    kh, kw = w.shape[-2:]
    dyp = _dilate_pad(dy, x_shape[-2:], (kh, kw), stride, padding)
    return _conv_mm(dyp, _transposed_kernel(w, groups), (1, 1), (0, 0), groups, _mm(acc))


def conv2d_backward_weight(dy, x, w_shape, stride=1, padding=0, groups=1, bias=True, impl="aten", acc=None):
    """``(dL/dw, dL/db)`` from ``dy`` and the forward input ``x``; ``dL/db`` is None without bias."""
    stride, padding = _pair(stride), _pair(padding)
    if acc is None and impl == "aten":
        _, dw, db = torch.ops.aten.convolution_backward(dy, x, dy.new_empty(w_shape), [w_shape[0]] if bias else None,
                                                        stride, padding, (1, 1), False, (0, 0), groups,
                                                        (False, True, bias))
        return dw, (db if bias else None)
    n = x.shape[0]
    cout, cg, kh, kw = w_shape
    cols = im2col(x, (kh, kw), stride, padding)  # n, cin*kh*kw, L
    L = cols.shape[-1]
    cols = cols.view(n, groups, cg * kh * kw, L).permute(1, 0, 3, 2).reshape(groups, n * L, cg * kh * kw)
    dym = dy.reshape(n, groups, cout // groups, L).permute(1, 2, 0, 3).reshape(groups, cout // groups, n * L)
    dw = _mm(acc)(dym, cols).reshape(w_shape)
    db = None
    if bias:
        db = dy.sum(dim=(0, 2, 3)) if acc is None else _mm(acc)(
            dy.transpose(0, 1).reshape(cout, 1, -1), dy.new_ones(cout, n * L, 1)).reshape(cout)
    return dw, db


def conv2d_backward(dy, x, w, stride=1, padding=0, groups=1, bias=True, need_input=True, impl="aten", acc=None):
    """Both gradients in one call: ``(dx or None, dw, db or None)``.

    With ``impl="aten"`` this is one fused library call (same arithmetic as the two steps).
    """
    if stride.__class__ is not tuple or padding.__class__ is not tuple:
        stride, padding = _pair(stride), _pair(padding)
    if acc is None and impl == "aten":
        dx, dw, db = torch.ops.aten.convolution_backward(dy, x, w, [w.shape[0]] if bias else None, stride, padding,
                                                         (1, 1), False, (0, 0), groups, (need_input, True, bias))
        return dx, dw, (db if bias else None)
    dx = conv2d_backward_input(dy, w, x.shape, stride, padding, groups, impl, acc) if need_input else None
    dw, db = conv2d_backward_weight(dy, x, w.shape, stride, padding, groups, bias, impl, acc)
    return dx, dw, db
