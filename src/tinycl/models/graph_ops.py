"""Engine ops for graph nodes with several inputs or outputs, and the routing / shape primitives.

Each op is a :class:`~tinycl.models.layers.Layer` with ``forward_many(xs, ctx)`` and
``backward_many(dy, ctx, needs) -> tuple of input grads`` (None where not needed). No autograd.
"""

from __future__ import annotations

import torch

from ..graph.layout import full_shape
from ..kernels import elementwise as E
from ..kernels import reduce as R
from ..kernels import shape as S
from .layers import Layer


def _shape(t):
    """A tensor operand's shape (what add / sub need for backward), None for a number."""
    return t.shape if isinstance(t, torch.Tensor) else None


class Multi(Layer):
    """Base of ops with ``forward_many`` / ``backward_many`` (a list of inputs)."""


class Binary(Multi):
    """add, sub, mul, div of two tensors (broadcasting) or of a tensor and a scalar."""

    def __init__(self, name, kind, scalar=None, reverse=False):
        super().__init__(name)
        self.kind, self.scalar, self.reverse = kind, scalar, reverse
        self._forward = getattr(E, f"{kind}_forward")
        self._backward = getattr(E, f"{kind}_backward")

    def _operands(self, xs):
        if self.scalar is None:
            return xs[0], xs[1]
        return (self.scalar, xs[0]) if self.reverse else (xs[0], self.scalar)

    def forward_many(self, xs, ctx):
        a, b = self._operands(xs)
        y = ctx.act(self._forward(a, b))
        if ctx.training:   # add / sub need only the operands' shapes
            self.saved = (_shape(a), _shape(b), None) if self.kind in ("add", "sub") else \
                (a, b, y if self.kind == "div" else None)
        return y

    def backward_many(self, dy, ctx, needs):
        a, b, y = self.saved
        self.saved = None
        if self.kind == "div":
            ga, gb = E.div_backward(dy, a, b, y)
        else:   # add / sub from the saved shapes, mul from the operands
            ga, gb = self._backward(dy, a, b)
        grads = [ga, gb] if self.scalar is None else [gb] if self.reverse else [ga]
        return tuple(ctx.grad(g) if need and g is not None else None for g, need in zip(grads, needs))


class Cat(Multi):
    def __init__(self, name, dim):
        super().__init__(name)
        self.dim = dim

    def forward_many(self, xs, ctx):
        self.saved = [x.shape[self.dim] for x in xs] if ctx.training else None
        return S.cat_forward(xs, self.dim)

    def backward_many(self, dy, ctx, needs):
        sizes, self.saved = self.saved, None
        return tuple(g if n else None for g, n in zip(S.cat_backward(dy, sizes, self.dim), needs))


class Split(Layer):
    """One input, several outputs (split / chunk / unbind); read through ``getitem`` nodes."""

    def __init__(self, name, dim, sizes, squeeze):
        super().__init__(name)
        self.dim, self.sizes, self.squeeze = dim, list(sizes), squeeze

    def forward(self, x, ctx):
        self.saved = x.shape if ctx.training else None
        parts = S.split_forward(x, self.sizes, self.dim)
        return tuple(p.squeeze(self.dim) for p in parts) if self.squeeze else tuple(parts)

    def backward(self, dys, ctx, need_input=True):
        shape, self.saved = self.saved, None
        if self.squeeze:
            dys = [None if g is None else g.unsqueeze(self.dim) for g in dys]
        return S.split_backward(dys, shape, self.sizes, self.dim)


class Reshape(Layer):
    """view / reshape / flatten / unflatten / squeeze: to a fixed per-sample shape.

    Where the batch is folded into another dimension (``in_batch`` / ``out_batch``, layouts as in
    :mod:`tinycl.graph.layout`), the target shape is rebuilt from the batch of each call."""

    kind = "reshape"

    def __init__(self, name, shape, batchless=False, in_batch=None, out_batch=None):
        super().__init__(name)
        self.shape, self.batchless = tuple(shape), batchless
        self.in_batch, self.out_batch = in_batch, out_batch
        self.folded = in_batch is not None or out_batch is not None

    def forward(self, x, ctx):
        self.saved = x.shape if ctx.training else None
        if self.batchless:
            return x.reshape(self.shape)
        if self.folded:
            d, size = (self.in_batch or (0, 1))[:2]
            return x.reshape(full_shape(self.shape, self.out_batch, x.shape[d] // size))
        return x.reshape(x.shape[0], *self.shape)

    def backward(self, dy, ctx, need_input=True):
        shape, self.saved = self.saved, None
        return dy.reshape(shape)


class Permute(Layer):
    kind = "permute"

    def __init__(self, name, dims):
        super().__init__(name)
        self.dims = tuple(dims)

    def forward(self, x, ctx):
        return S.permute_forward(x, self.dims)

    def backward(self, dy, ctx, need_input=True):
        return S.permute_backward(dy, self.dims)


class Slice(Layer):
    """Basic indexing (slices, integers, None, Ellipsis) that keeps the batch dimension."""

    kind = "slice"

    def __init__(self, name, index):
        super().__init__(name)
        self.index = tuple(index)

    def forward(self, x, ctx):
        self.saved = x.shape if ctx.training else None
        return x[self.index]

    def backward(self, dy, ctx, need_input=True):
        shape, self.saved = self.saved, None
        dx = dy.new_zeros(shape)
        dx[self.index] = dy
        return dx


class Reduce(Layer):
    """mean or sum over dims (never the batch)."""

    def __init__(self, name, kind, dims, keepdim):
        super().__init__(name)
        self.kind, self.dims, self.keepdim = kind, tuple(dims), keepdim

    def forward(self, x, ctx):
        self.saved = x.shape if ctx.training else None
        return ctx.act(getattr(R, f"{self.kind}_forward")(x, self.dims, self.keepdim))

    def backward(self, dy, ctx, need_input=True):
        shape, self.saved = self.saved, None
        return ctx.grad(getattr(R, f"{self.kind}_backward")(dy, shape, self.dims, self.keepdim))


class Detach(Layer):
    """``x.detach()``: passes values, stops the gradient."""

    kind = "detach"
    stops_gradient = True

    def forward(self, x, ctx):
        return x

    def backward(self, dy, ctx, need_input=True):
        return None


class Clamp(Layer):
    """``clamp(x, min, max)``: gradient 1 where min <= x <= max (torch's convention)."""

    kind = "clamp"

    def __init__(self, name, lo, hi):
        super().__init__(name)
        self.lo, self.hi = lo, hi

    def forward(self, x, ctx):
        self.saved = x if ctx.training else None
        return x.clamp(self.lo, self.hi)

    def backward(self, dy, ctx, need_input=True):
        x, self.saved = self.saved, None
        keep = torch.ones_like(x, dtype=torch.bool)
        if self.lo is not None:
            keep &= x >= self.lo
        if self.hi is not None:
            keep &= x <= self.hi
        return dy * keep
