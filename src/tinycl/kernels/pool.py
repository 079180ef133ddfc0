"""Pooling: max, average and global average; forward and input gradient."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


def _p(v):
    return (v, v) if isinstance(v, int) else tuple(v)


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
