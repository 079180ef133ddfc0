"""Pooling: max, average and global average; forward and input gradient.

The ``*pool2d_*`` / ``*pool1d_*`` / ``adaptive_*`` functions below the original set add
``ceil_mode``, ``count_include_pad=False``, 1d pools and adaptive average pools of any
output size (dilation 1). Output sizes and window counts: :mod:`tinycl.kernels.macs`
(``pool_out_size``, ``pool_window_sizes``, ``adaptive_windows``, ``pool2d_ops`` ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import TinyclError
from .macs import pair, pool_window_sizes


def maxpool_forward(x, kernel, stride, padding=0):
    """Returns ``(y, indices)``; indices (flat over each H*W plane) drive the backward."""
    return F.max_pool2d(x, kernel, stride, padding, return_indices=True)


def maxpool_backward(dy, indices, x_shape):
    """Scatter ``dy`` to the arg-max positions (summing where windows overlap)."""
    n, c, h, w = x_shape
    dx = dy.new_zeros(n, c, h * w)
    dx.scatter_add_(2, indices.reshape(n, c, -1), dy.reshape(n, c, -1))
    return dx.view(x_shape)


def avgpool_forward(x, kernel, stride, padding=0, count_include_pad=True):
    return F.avg_pool2d(x, kernel, stride, padding, count_include_pad=count_include_pad)


def avgpool_backward(dy, x_shape, kernel, stride, padding=0, count_include_pad=True):
    """Spread each ``dy`` evenly over its window: the transposed conv of an all-ones kernel."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    n, c = x_shape[:2]
    if count_include_pad or padding in (0, (0, 0)):
        w = dy.new_full((c, 1, kh, kw), 1.0 / (kh * kw))
        return torch.ops.aten.convolution_backward(dy, dy.new_empty(x_shape), w, None, _p(stride), _p(padding),
                                                   (1, 1), False, (0, 0), c, (True, False, False))[0]
    raise ValueError("avg pool backward supports count_include_pad=True or no padding")


_p = pair


def global_avgpool_forward(x):
    """``N x C x H x W -> N x C x 1 x 1`` (mean over H, W)."""
    return x.mean(dim=(2, 3), keepdim=True)


def global_avgpool_backward(dy, x_shape):
    h, w = x_shape[2:]
    return (dy / (h * w)).expand(x_shape).contiguous()


def pool_ops(out_numel: int, kernel: tuple[int, int] | None, in_numel: int | None = None) -> dict[str, int]:
    """Operations (compares or adds, not MACs): a window of kh*kw per output element forward,
    one scatter per output element backward; global pooling reads every input once."""
    if kernel is None:  # global average pool
        return {"forward": in_numel, "backward_input": in_numel, "backward_weight": 0, "update": 0}
    kh, kw = kernel
    return {"forward": out_numel * kh * kw, "backward_input": out_numel * kh * kw, "backward_weight": 0, "update": 0}


# ---------------------------------------------------------------------------------------------
# ceil_mode, count_include_pad=False, 1d and adaptive pools.
# ---------------------------------------------------------------------------------------------

def _pool_args(kernel, stride, padding):
    """``(kernel, stride, padding)`` as pairs; ``stride=None`` means the kernel size (torch's default)."""
    k = _p(kernel)
    s = k if stride is None or (not isinstance(stride, int) and len(stride) == 0) else _p(stride)
    p = _p(padding)
    if any(pi * 2 > ki for pi, ki in zip(p, k)):
        raise TinyclError(f"pool padding {list(p)} must be at most half the kernel {list(k)}")
    return k, s, p


def maxpool2d_forward(x, kernel, stride=None, padding=0, ceil_mode=False):
    """Returns ``(y, indices)``; indices (flat over each H*W plane) feed :func:`maxpool_backward`."""
    k, s, p = _pool_args(kernel, stride, padding)
    return torch.ops.aten.max_pool2d_with_indices(x, k, s, p, (1, 1), ceil_mode)


maxpool2d_backward = maxpool_backward  # (dy, indices, x_shape): a scatter, whatever the geometry


def avgpool2d_forward(x, kernel, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Average of each window; the divisor follows ``count_include_pad`` and clips ceil_mode windows."""
    k, s, p = _pool_args(kernel, stride, padding)
    return torch.ops.aten.avg_pool2d(x, k, s, p, ceil_mode, count_include_pad, None)


def avgpool2d_backward(dy, x_shape, kernel, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                       impl="aten"):
    """Spread each ``dy`` over its window divided by that window's true count.

    ``impl="aten"``: torch's native kernel. ``"explicit"``: ``dy`` divided by the window counts
    (:func:`avgpool2d_divisors`), then the transposed conv of an all-ones kernel over an input
    extended so the last ceil_mode window fits, cropped back to ``x_shape``.
    """
    k, s, p = _pool_args(kernel, stride, padding)
    if impl == "aten":
        return torch.ops.aten.avg_pool2d_backward(dy, dy.new_empty(x_shape), k, s, p, ceil_mode, count_include_pad,
                                                  None)
    if impl != "explicit":
        raise TinyclError(f"pool impl {impl!r} is not one of 'aten', 'explicit'")
    n, c, h, w = x_shape
    ho, wo = dy.shape[-2:]
    g = dy / avgpool2d_divisors((h, w), k, s, p, ceil_mode, count_include_pad).to(dy)
    hx, wx = max(h, (ho - 1) * s[0] + k[0] - 2 * p[0]), max(w, (wo - 1) * s[1] + k[1] - 2 * p[1])
    ones = dy.new_ones((c, 1) + k)
    dx = torch.ops.aten.convolution_backward(g, dy.new_empty(n, c, hx, wx), ones, None, s, p, (1, 1), False, (0, 0),
                                             c, (True, False, False))[0]
    return dx[:, :, :h, :w]


def avgpool2d_divisors(hw, kernel, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """``Ho x Wo`` tensor (float64) of the divisor of each output of an average pool."""
    k, s, p = _pool_args(kernel, stride, padding)
    dh = pool_window_sizes(hw[0], k[0], s[0], p[0], ceil_mode, include_pad=count_include_pad)
    dw = pool_window_sizes(hw[1], k[1], s[1], p[1], ceil_mode, include_pad=count_include_pad)
    return torch.outer(torch.tensor(dh, dtype=torch.float64), torch.tensor(dw, dtype=torch.float64))


def _single(v):
    return int(v[0]) if isinstance(v, (tuple, list)) else int(v)


def _as_2d(kernel, stride, padding):
    """1d pool arguments as the (1, k) 2d ones."""
    k = _single(kernel)
    s = k if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) else _single(stride)
    return (1, k), (1, s), (0, _single(padding))


def maxpool1d_forward(x, kernel, stride=None, padding=0, ceil_mode=False):
    """``N x C x L`` max pool: ``(y, indices)``, indices over L (the 2d pool on ``N x C x 1 x L``)."""
    y, idx = maxpool2d_forward(x.unsqueeze(2), *_as_2d(kernel, stride, padding), ceil_mode)
    return y.squeeze(2), idx.squeeze(2)


def maxpool1d_backward(dy, indices, x_shape):
    """Scatter ``dy`` to the arg-max positions along L."""
    dx = dy.new_zeros(x_shape)
    return dx.scatter_add_(2, indices, dy)


def avgpool1d_forward(x, kernel, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    return avgpool2d_forward(x.unsqueeze(2), *_as_2d(kernel, stride, padding), ceil_mode,
                             count_include_pad).squeeze(2)


def avgpool1d_backward(dy, x_shape, kernel, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                       impl="aten"):
    n, c, length = x_shape
    return avgpool2d_backward(dy.unsqueeze(2), (n, c, 1, length), *_as_2d(kernel, stride, padding), ceil_mode,
                              count_include_pad, impl).squeeze(2)


def _adaptive_size(in_hw, output_size):
    """``output_size`` as a pair; ``None`` entries keep the input size."""
    single = isinstance(output_size, int) or output_size is None
    out = (output_size,) * len(in_hw) if single else tuple(output_size)
    if len(out) != len(in_hw):
        raise TinyclError(f"adaptive pool output size {list(out)} does not match {len(in_hw)} dims")
    out = tuple(int(i if o is None else o) for o, i in zip(out, in_hw))
    if any(o <= 0 for o in out):
        raise TinyclError(f"adaptive pool output size must be positive, got {list(out)}")
    return out


def adaptive_avgpool2d_forward(x, output_size):
    """Average over windows ``[floor(i*H/Ho), ceil((i+1)*H/Ho))`` (and the same along W)."""
    return torch.ops.aten._adaptive_avg_pool2d(x, _adaptive_size(x.shape[-2:], output_size))


def adaptive_avgpool2d_backward(dy, x_shape):
    """Spread each ``dy`` over its (possibly overlapping) window, divided by the window size."""
    return torch.ops.aten._adaptive_avg_pool2d_backward(dy, dy.new_empty(x_shape))


def adaptive_avgpool1d_forward(x, output_size):
    """``N x C x L`` adaptive average pool (the 2d one on ``N x C x 1 x L``)."""
    out = _adaptive_size(x.shape[-1:], output_size)
    return adaptive_avgpool2d_forward(x.unsqueeze(2), (1, out[0])).squeeze(2)


def adaptive_avgpool1d_backward(dy, x_shape):
    n, c, length = x_shape
    return adaptive_avgpool2d_backward(dy.unsqueeze(2), (n, c, 1, length)).squeeze(2)
