"""Sum and mean over a tuple of dims (``keepdim`` or not); forward and input gradient.

``dims=None`` reduces every dim. Op counts: :func:`tinycl.kernels.macs.reduce_ops`.
"""

from __future__ import annotations

import torch

from ..errors import TinyclError

__all__ = ["reduce_dims", "sum_forward", "sum_backward", "mean_forward", "mean_backward"]


def reduce_dims(dims, ndim: int) -> tuple[int, ...]:
    """Non-negative, sorted, distinct dims; ``None`` or ``()`` means all dims (as torch's sum/mean)."""
    if dims is None:
        return tuple(range(ndim))
    if isinstance(dims, int):
        dims = (dims,)
    if len(dims) == 0:
        return tuple(range(ndim))
    out = []
    for d in dims:
        if not -ndim <= d < max(ndim, 1):
            raise TinyclError(f"dim {d} is out of range for a tensor with {ndim} dims")
        out.append(d % max(ndim, 1))
    if len(set(out)) != len(out):
        raise TinyclError(f"dims {list(dims)} name a dim twice")
    return tuple(sorted(out))


def _reduce(op, x, dims, keepdim):
    """``op(x, dims, keepdim)``; the dims are validated (one-line error) only when torch refuses them."""
    try:
        return op(x, dim=None if dims is None or (not isinstance(dims, int) and len(dims) == 0) else dims,
                  keepdim=keepdim)
    except (RuntimeError, IndexError):
        reduce_dims(dims, x.dim())
        raise


def sum_forward(x: torch.Tensor, dims=None, keepdim: bool = False) -> torch.Tensor:
    return _reduce(torch.sum, x, dims, keepdim)


def _expand_back(dy: torch.Tensor, x_shape, dims, keepdim: bool) -> torch.Tensor:
    """``dy`` with the reduced dims restored (size 1), broadcast to ``x_shape`` (a new tensor, so a
    caller may accumulate into it in place)."""
    d = reduce_dims(dims, len(x_shape))
    if not keepdim:
        shape = [1 if i in d else s for i, s in enumerate(x_shape)]
        dy = dy.reshape(shape)
    return dy.expand(tuple(x_shape)).contiguous()


def sum_backward(dy: torch.Tensor, x_shape, dims=None, keepdim: bool = False) -> torch.Tensor:
    """Each input element gets the gradient of its sum (``dy`` broadcast back)."""
    return _expand_back(dy, x_shape, dims, keepdim)


def mean_forward(x: torch.Tensor, dims=None, keepdim: bool = False) -> torch.Tensor:
    return _reduce(torch.mean, x, dims, keepdim)


def mean_backward(dy: torch.Tensor, x_shape, dims=None, keepdim: bool = False) -> torch.Tensor:
    """``dy / count`` broadcast back, ``count`` = product of the reduced dims' sizes."""
    count = 1
    for d in reduce_dims(dims, len(x_shape)):
        count *= x_shape[d]
    return _expand_back(dy / count, x_shape, dims, keepdim)
