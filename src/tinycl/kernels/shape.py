"""Shape and routing ops: cat, split, chunk, permute, transpose, reshape / view, flatten,
slicing along one dim, select, contiguous, identity; forward and input gradient.

None of these does arithmetic (``macs.shape_ops`` counts 0 ops); they move data, which the
memory planner counts in bytes. Backward of a split with some outputs unused takes ``None``
for their gradients and fills zeros there.
"""

from __future__ import annotations

import torch

from ..errors import TinyclError

__all__ = ["cat_forward", "cat_backward", "split_sizes", "chunk_sizes", "split_forward", "split_backward",
           "chunk_forward", "chunk_backward", "permute_forward", "permute_backward", "transpose_forward",
           "transpose_backward", "reshape_forward", "reshape_backward", "view_forward", "view_backward",
           "flatten_dims_forward", "flatten_dims_backward", "slice_forward", "slice_backward",
           "select_forward", "select_backward", "contiguous_forward", "contiguous_backward", "identity_forward",
           "identity_backward"]


def _dim(dim: int, ndim: int) -> int:
    if not -ndim <= dim < max(ndim, 1):
        raise TinyclError(f"dim {dim} is out of range for a tensor with {ndim} dims")
    return dim % max(ndim, 1)


def cat_forward(xs, dim: int = 0) -> torch.Tensor:
    """Concatenate tensors along ``dim``."""
    return torch.cat(list(xs), dim)


def cat_backward(dy: torch.Tensor, sizes, dim: int = 0) -> list[torch.Tensor]:
    """Split ``dy`` into the inputs' gradients; ``sizes`` = each input's length along ``dim``."""
    return list(dy.split(list(sizes), _dim(dim, dy.dim())))


def split_sizes(size: int, split_size_or_sections) -> list[int]:
    """Lengths of the pieces of ``torch.split(x, split_size_or_sections)`` along a dim of ``size``."""
    if isinstance(split_size_or_sections, int):
        s = split_size_or_sections
        if s <= 0:
            raise TinyclError(f"split size must be positive, got {s}")
        return [min(s, size - i) for i in range(0, size, s)] or [0]
    sections = [int(v) for v in split_size_or_sections]
    if sum(sections) != size:
        raise TinyclError(f"split sections {sections} do not sum to the dim size {size}")
    return sections


def chunk_sizes(size: int, chunks: int) -> list[int]:
    """Lengths of ``torch.chunk(x, chunks)`` pieces: ``ceil(size / chunks)`` each, the last shorter;
    there may be fewer than ``chunks`` pieces."""
    if chunks <= 0:
        raise TinyclError(f"chunk count must be positive, got {chunks}")
    if size == 0:
        return [0] * chunks
    return split_sizes(size, max(-(-size // chunks), 1))


def split_forward(x: torch.Tensor, split_size_or_sections, dim: int = 0) -> list[torch.Tensor]:
    """``torch.split``: pieces of ``x`` along ``dim`` (views)."""
    try:
        return list(x.split(split_size_or_sections, dim))
    except (RuntimeError, IndexError):
        split_sizes(x.shape[_dim(dim, x.dim())], split_size_or_sections)  # raises the one-line error
        raise


def split_backward(dys, x_shape, split_size_or_sections, dim: int = 0) -> torch.Tensor:
    """Assemble ``dx`` from the pieces' gradients ``dys``; ``None`` marks an unused piece (zeros there).

    ``split_size_or_sections`` is the forward's argument (an int or the list of lengths).
    """
    d = _dim(dim, len(x_shape))
    sizes = split_sizes(x_shape[d], split_size_or_sections)
    if len(sizes) != len(dys):
        raise TinyclError(f"split backward got {len(dys)} gradients for {len(sizes)} pieces")
    ref = next((g for g in dys if g is not None), None)
    if ref is None:
        raise TinyclError("split backward needs at least one output gradient")
    if all(g is not None for g in dys):
        return torch.cat(list(dys), d)
    dx = ref.new_zeros(x_shape)
    start = 0
    for g, n in zip(dys, sizes):
        if g is not None:
            dx.narrow(d, start, n).copy_(g)
        start += n
    return dx


def chunk_forward(x: torch.Tensor, chunks: int, dim: int = 0) -> list[torch.Tensor]:
    """``torch.chunk``: at most ``chunks`` pieces along ``dim`` (views)."""
    try:
        return list(x.chunk(chunks, dim))
    except (RuntimeError, IndexError):
        chunk_sizes(x.shape[_dim(dim, x.dim())], chunks)  # raises the one-line error
        raise


def chunk_backward(dys, x_shape, chunks: int, dim: int = 0) -> torch.Tensor:
    """:func:`split_backward` for ``torch.chunk(x, chunks, dim)``."""
    d = _dim(dim, len(x_shape))
    return split_backward(dys, x_shape, chunk_sizes(x_shape[d], chunks), d)


def _perm(dims, ndim: int) -> list[int]:
    p = [_dim(int(d), ndim) for d in dims]
    if sorted(p) != list(range(ndim)):
        raise TinyclError(f"permutation {list(dims)} is not a permutation of {ndim} dims")
    return p


def permute_forward(x: torch.Tensor, dims) -> torch.Tensor:
    """``x.permute(dims)`` (a view)."""
    try:
        return x.permute(tuple(dims))
    except (RuntimeError, IndexError):
        _perm(dims, x.dim())  # raises the one-line error
        raise


def permute_backward(dy: torch.Tensor, dims) -> torch.Tensor:
    """Permute ``dy`` by the inverse permutation."""
    p = _perm(dims, dy.dim())
    inv = [0] * len(p)
    for i, d in enumerate(p):
        inv[d] = i
    return dy.permute(inv)


def transpose_forward(x: torch.Tensor, dim0: int, dim1: int) -> torch.Tensor:
    """``x.transpose(dim0, dim1)`` (a view)."""
    try:
        return x.transpose(dim0, dim1)
    except IndexError:
        _dim(dim0, x.dim()), _dim(dim1, x.dim())  # raises the one-line error
        raise


def transpose_backward(dy: torch.Tensor, dim0: int, dim1: int) -> torch.Tensor:
    """A transpose is its own inverse."""
    return transpose_forward(dy, dim0, dim1)


def reshape_forward(x: torch.Tensor, shape) -> torch.Tensor:
    """``x.reshape(shape)`` (one entry may be -1); a view where the memory layout allows."""
    try:
        return x.reshape(tuple(shape))
    except RuntimeError:
        raise TinyclError(f"cannot reshape a tensor of shape {list(x.shape)} to {list(shape)}") from None


def reshape_backward(dy: torch.Tensor, x_shape) -> torch.Tensor:
    """Reshape ``dy`` back to the input's shape."""
    return dy.reshape(tuple(x_shape))


view_forward = reshape_forward      # ``view`` differs from ``reshape`` only in when it may copy
view_backward = reshape_backward


def flatten_dims_forward(x: torch.Tensor, start_dim: int = 0, end_dim: int = -1) -> torch.Tensor:
    """``torch.flatten(x, start_dim, end_dim)``: merge dims ``start_dim..end_dim`` into one."""
    if x.dim() == 0:
        return x.reshape(1)
    s, e = _dim(start_dim, x.dim()), _dim(end_dim, x.dim())
    if s > e:
        raise TinyclError(f"flatten start_dim {start_dim} comes after end_dim {end_dim}")
    return x.reshape(tuple(x.shape[:s]) + (-1,) + tuple(x.shape[e + 1:]))


def flatten_dims_backward(dy: torch.Tensor, x_shape) -> torch.Tensor:
    return dy.reshape(tuple(x_shape))


def _slice_args(size: int, start, stop, step):
    step = 1 if step is None else int(step)
    if step <= 0:
        raise TinyclError(f"slice step must be positive, got {step}")
    return slice(start, stop, step).indices(size)


def slice_forward(x: torch.Tensor, dim: int, start=None, stop=None, step=None) -> torch.Tensor:
    """``x[..., start:stop:step, ...]`` along ``dim`` (Python slice rules, positive step; a view)."""
    d = _dim(dim, x.dim())
    b, e, s = _slice_args(x.shape[d], start, stop, step)
    return torch.ops.aten.slice(x, d, b, max(e, b), s)


def slice_backward(dy: torch.Tensor, x_shape, dim: int, start=None, stop=None, step=None) -> torch.Tensor:
    """Scatter ``dy`` into zeros of the input's shape at the sliced positions."""
    d = _dim(dim, len(x_shape))
    b, e, s = _slice_args(x_shape[d], start, stop, step)
    return torch.ops.aten.slice_backward(dy, list(x_shape), d, b, max(e, b), s)


def select_forward(x: torch.Tensor, dim: int, index: int) -> torch.Tensor:
    """``x.select(dim, index)``: one position along ``dim``, which disappears (a view)."""
    d = _dim(dim, x.dim())
    if not -x.shape[d] <= index < x.shape[d]:
        raise TinyclError(f"index {index} is out of range for dim {dim} of size {x.shape[d]}")
    return x.select(d, index)


def select_backward(dy: torch.Tensor, x_shape, dim: int, index: int) -> torch.Tensor:
    """Zeros of the input's shape with ``dy`` at ``index`` along ``dim``."""
    d = _dim(dim, len(x_shape))
    return torch.ops.aten.select_backward(dy, list(x_shape), d, index % x_shape[d])


def contiguous_forward(x: torch.Tensor) -> torch.Tensor:
    """``x.contiguous()``: same values; a copy only if ``x`` is not contiguous."""
    return x.contiguous()


def contiguous_backward(dy: torch.Tensor) -> torch.Tensor:
    return dy


def identity_forward(x: torch.Tensor) -> torch.Tensor:
    """``nn.Identity`` (and Dropout in eval): returns ``x`` itself."""
    return x


def identity_backward(dy: torch.Tensor) -> torch.Tensor:
    return dy
