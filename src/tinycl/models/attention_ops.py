"""Engine ops for attention: the product of two tensors and scaled dot-product attention.

Both read several inputs (``forward_many`` / ``backward_many``), keep what their backward needs
when training, and use the plain kernels of :mod:`tinycl.kernels.attention` (no autograd).
"""

from __future__ import annotations

from ..graph.layout import full_shape
from ..kernels import attention as K
from ..kernels import linear as L
from ..kernels.elementwise import unbroadcast
from .graph_ops import Multi


class MatMul(Multi):
    """``a @ b`` of two activations (or an activation and a parameter), leading dims broadcast."""

    kind = "matmul"

    def forward_many(self, xs, ctx):
        a, b = xs
        self.saved = (a, b) if ctx.training else None
        return ctx.act(K.matmul_forward(a, b))

    def backward_many(self, dy, ctx, needs):
        a, b = self.saved
        self.saved = None
        da, db = K.matmul_backward(dy, a, b, needs[0], needs[1])
        return ctx.grad(da), ctx.grad(db)


class Attention(Multi):
    """``scaled_dot_product_attention(q, k, v[, mask])``; keeps the attention weights (``L x S`` per
    head) for the backward."""

    kind = "sdpa"

    def __init__(self, name, causal=False, scale=None, mask="none"):
        super().__init__(name)
        self.causal, self.scale, self.mask = causal, scale, mask

    def forward_many(self, xs, ctx):
        q, k, v = xs[:3]
        m = xs[3] if len(xs) > 3 else None
        y, p = K.sdpa_forward(q, k, v, m, self.causal, self.scale)
        self.saved = (q, k, v, p, None if m is None else m.shape) if ctx.training else None
        return ctx.act(y)

    def backward_many(self, dy, ctx, needs):
        q, k, v, p, mshape = self.saved
        self.saved = None
        float_mask = self.mask == "float" and len(needs) > 3 and needs[3]
        dq, dk, dv, dm = K.sdpa_backward(dy, q, k, v, p, self.scale, mshape if float_mask else None)
        grads = (dq, dk, dv, dm)[:len(needs)]
        return tuple(ctx.grad(g) if need else None for g, need in zip(grads, needs))


class Expand(Multi):
    """``x.expand(...)``: a broadcast view to the node's shape; the batch comes from the last input
    (``x`` itself, or the tensor a class token's ``expand(B, ...)`` read its size from). Backward
    sums the gradient over the expanded dimensions; the batch source gets none."""

    kind = "expand"

    def __init__(self, name, shape, out_batch, src_batch):
        super().__init__(name)
        self.shape, self.out_batch, self.src_batch = tuple(shape), out_batch, src_batch

    def forward_many(self, xs, ctx):
        d, size = (self.src_batch or (0, 1))[:2]
        batch = xs[-1].shape[d] // size
        self.saved = xs[0].shape if ctx.training else None
        return xs[0].expand(full_shape(self.shape, self.out_batch, batch))

    def backward_many(self, dy, ctx, needs):
        shape, self.saved = self.saved, None
        dx = unbroadcast(dy, shape) if needs[0] else None
        if dx is not None and dx.data_ptr() == dy.data_ptr():
            dx = dx.clone()
        return (dx,) + (None,) * (len(needs) - 1)


class Take(Multi):
    """``x[:, index]``: an integer index tensor (a buffer) along ``dim``; no gradient to the index."""

    kind = "take"

    def __init__(self, name, dim):
        super().__init__(name)
        self.dim = dim

    def forward_many(self, xs, ctx):
        x, index = xs
        self.saved = (x.shape, index) if ctx.training else None
        return K.take_forward(x, index, self.dim)

    def backward_many(self, dy, ctx, needs):
        shape, index = self.saved
        self.saved = None
        return (K.take_backward(dy, shape, index, self.dim) if needs[0] else None), None


class LinearT(Multi):
    """``F.linear(x, w, b)`` with the weight and bias as inputs (computed from parameters)."""

    kind = "linear_t"

    def forward_many(self, xs, ctx):
        x, w = xs[0], xs[1]
        b = xs[2] if len(xs) > 2 else None
        x2 = x.reshape(-1, x.shape[-1])
        self.saved = (x2, w, x.shape) if ctx.training else None
        y = L.linear_forward(x2, w, b)
        return ctx.act(y.reshape(*x.shape[:-1], y.shape[-1]))

    def backward_many(self, dy, ctx, needs):
        x2, w, shape = self.saved
        self.saved = None
        dy2 = dy.reshape(-1, dy.shape[-1])
        dx = L.linear_backward_input(dy2, w).reshape(shape) if needs[0] else None
        dw, db = L.linear_backward_weight(dy2, x2, len(needs) > 2)
        return tuple(ctx.grad(g) if need else None for g, need in zip((dx, dw, db), needs))
