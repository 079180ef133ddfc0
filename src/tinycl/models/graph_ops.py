"""Engine ops for graph nodes with several inputs or outputs, and the routing / shape primitives.

Each op is a :class:`~tinycl.models.layers.Layer` with ``forward_many(xs, ctx)`` and
``backward_many(dy, ctx, needs) -> tuple of input grads`` (None where not needed). No autograd.
"""

from __future__ import annotations

import torch

from .layers import Layer


def unbroadcast(g: torch.Tensor, shape) -> torch.Tensor:
    """Sum a broadcast gradient back to ``shape`` (the operand's shape)."""
    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    lead = g.dim() - len(shape)
    dims = tuple(range(lead)) + tuple(i + lead for i, s in enumerate(shape) if s == 1 and g.shape[i + lead] != 1)
    return g.sum(dim=dims, keepdim=True).reshape(shape) if dims else g.reshape(shape)


class Multi(Layer):
    """Base of ops with ``forward_many`` / ``backward_many`` (a list of inputs)."""


class Binary(Multi):
    """add, sub, mul, div of two tensors (broadcasting) or of a tensor and a scalar."""

    def __init__(self, name, kind, scalar=None, reverse=False):
        super().__init__(name)
        self.kind, self.scalar, self.reverse = kind, scalar, reverse

    def _operands(self, xs):
        if self.scalar is None:
            return xs[0], xs[1]
        return (self.scalar, xs[0]) if self.reverse else (xs[0], self.scalar)

    def forward_many(self, xs, ctx):
        a, b = self._operands(xs)
        y = {"add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b, "div": lambda: a / b}[self.kind]()
        y = ctx.act(y)
        self.saved = (a, b, y, [x.shape for x in xs]) if ctx.training else None
        return y

    def backward_many(self, dy, ctx, needs):
        a, b, y, shapes = self.saved
        self.saved = None
        k = self.kind
        ga = {"add": dy, "sub": dy, "mul": lambda: dy * b, "div": lambda: dy / b}[k]
        gb = {"add": dy, "sub": lambda: -dy, "mul": lambda: dy * a, "div": lambda: -dy * y / b}[k]
        grads = [ga, gb] if self.scalar is None else [gb] if self.reverse else [ga]
        return tuple(ctx.grad(unbroadcast(g() if callable(g) else g, sh)) if need else None
                     for g, sh, need in zip(grads, shapes, needs))


class Cat(Multi):
    def __init__(self, name, dim):
        super().__init__(name)
        self.dim = dim

    def forward_many(self, xs, ctx):
        self.saved = [x.shape[self.dim] for x in xs] if ctx.training else None
        return torch.cat(xs, self.dim)

    def backward_many(self, dy, ctx, needs):
        sizes, self.saved = self.saved, None
        return tuple(g if n else None for g, n in zip(torch.split(dy, sizes, self.dim), needs))


class Split(Layer):
    """One input, several outputs (split / chunk / unbind); read through ``getitem`` nodes."""

    def __init__(self, name, dim, sizes, squeeze):
        super().__init__(name)
        self.dim, self.sizes, self.squeeze = dim, list(sizes), squeeze

    def forward(self, x, ctx):
        self.saved = x.shape if ctx.training else None
        parts = torch.split(x, self.sizes, self.dim)
        return tuple(p.squeeze(self.dim) for p in parts) if self.squeeze else parts

    def backward(self, dys, ctx, need_input=True):
        shape, self.saved = self.saved, None
        parts = []
        for g, size in zip(dys, self.sizes):
            if g is None:
                sh = list(shape)
                sh[self.dim] = size
                g = torch.zeros(sh, dtype=dys_dtype(dys))
            elif self.squeeze:
                g = g.unsqueeze(self.dim)
            parts.append(g)
        return torch.cat(parts, self.dim)


def dys_dtype(dys):
    return next(g.dtype for g in dys if g is not None)


class Reshape(Layer):
    """view / reshape / flatten / unflatten / squeeze: to a fixed per-sample shape."""

    kind = "reshape"

    def __init__(self, name, shape):
        super().__init__(name)
        self.shape = tuple(shape)

    def forward(self, x, ctx):
        self.saved = x.shape if ctx.training else None
        return x.reshape(x.shape[0], *self.shape)

    def backward(self, dy, ctx, need_input=True):
        shape, self.saved = self.saved, None
        return dy.reshape(shape)


class Permute(Layer):
    kind = "permute"

    def __init__(self, name, dims):
        super().__init__(name)
        self.dims = tuple(dims)
        self.inverse = tuple(sorted(range(len(dims)), key=lambda i: dims[i]))

    def forward(self, x, ctx):
        return x.permute(self.dims)

    def backward(self, dy, ctx, need_input=True):
        return dy.permute(self.inverse)


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
        y = x.mean(self.dims, keepdim=self.keepdim) if self.kind == "mean" else x.sum(self.dims, keepdim=self.keepdim)
        return ctx.act(y)

    def backward(self, dy, ctx, need_input=True):
        shape, self.saved = self.saved, None
        if not self.keepdim:
            for d in sorted(self.dims):
                dy = dy.unsqueeze(d)
        if self.kind == "mean":
            count = 1
            for d in self.dims:
                count *= shape[d]
            dy = dy / count
        return ctx.grad(dy.expand(shape).contiguous())


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
