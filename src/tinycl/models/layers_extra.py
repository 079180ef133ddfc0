"""Engine layers of the graph ops beyond the first-wave set: each wraps kernel steps, no autograd.

Pointwise activations, Conv1d, LayerNorm, pools with ceil_mode / 1-d / adaptive output sizes,
upsampling and stochastic depth. Outputs are rounded to the activation format and gradients to
the gradient format by the precision policy, like every layer.
"""

from __future__ import annotations

from ..kernels import activations as A
from ..kernels import conv1d as C1
from ..kernels import layernorm as LN
from ..kernels import misc as M
from ..kernels import pool as P
from ..kernels import upsample as U
from .layers import Layer, Param

# activation -> (forward, backward, backward reads the output (True) or the input (False))
_POINTWISE = {
    "hardswish": (A.hardswish_forward, A.hardswish_backward, False),
    "hardsigmoid": (A.hardsigmoid_forward, A.hardsigmoid_backward, False),
    "sigmoid": (A.sigmoid_forward, A.sigmoid_backward, True),
    "silu": (A.silu_forward, A.silu_backward, False),
    "tanh": (A.tanh_forward, A.tanh_backward, True),
}


class Pointwise(Layer):
    """hardswish, hardsigmoid, sigmoid, SiLU, tanh, GELU (exact or tanh approximation)."""

    KINDS = (*_POINTWISE, "gelu")

    def __init__(self, name, kind, approximate="none"):
        super().__init__(name)
        self.kind, self.approximate = kind, approximate

    def forward(self, x, ctx):
        if self.kind == "gelu":
            y, from_out = A.gelu_forward(x, self.approximate), False
        else:
            fwd, _, from_out = _POINTWISE[self.kind]
            y = fwd(x)
        y = ctx.act(y)
        self.saved = (y if from_out else x) if ctx.training else None
        return y

    def backward(self, dy, ctx, need_input=True):
        s, self.saved = self.saved, None
        if self.kind == "gelu":
            return ctx.grad(A.gelu_backward(dy, s, self.approximate))
        return ctx.grad(_POINTWISE[self.kind][1](dy, s))


class Conv1d(Layer):
    kind = "conv1d"

    def __init__(self, name, stride, padding, groups):
        super().__init__(name)
        self.stride, self.padding, self.groups = stride, padding, groups

    def forward(self, x, ctx):
        w = self.params["weight"].compute(ctx.prec)
        b = self.params["bias"].compute(ctx.prec) if "bias" in self.params else None
        self.saved = x if ctx.training else None
        return ctx.act(C1.conv1d_forward(x, w, b, self.stride, self.padding, self.groups, ctx.impl, ctx.prec.native))

    def backward(self, dy, ctx, need_input=True):
        w = self.params["weight"].compute(ctx.prec)
        x, self.saved = self.saved, None
        if not any(p.trainable for p in self.params.values()):
            return ctx.grad(C1.conv1d_backward_input(dy, w, x.shape, self.stride, self.padding, self.groups,
                                                     ctx.impl, ctx.prec.native)) if need_input else None
        dx, dw, db = C1.conv1d_backward(dy, x, w, self.stride, self.padding, self.groups, "bias" in self.params,
                                        need_input, ctx.impl, ctx.prec.native)
        self.params["weight"].accumulate(ctx.grad(dw))
        if db is not None:
            self.params["bias"].accumulate(ctx.grad(db))
        return ctx.grad(dx)


class LayerNorm(Layer):
    kind = "layernorm"

    def __init__(self, name, normalized_shape, eps):
        super().__init__(name)
        self.shape, self.eps = tuple(normalized_shape), eps

    def _impl(self, ctx):
        return "aten" if ctx.impl == "aten" else "explicit"

    def forward(self, x, ctx):
        g = self.params["weight"].compute(ctx.prec) if "weight" in self.params else None
        b = self.params["bias"].compute(ctx.prec) if "bias" in self.params else None
        y, cache = LN.layernorm_forward(x, self.shape, g, b, self.eps, self._impl(ctx))
        self.saved = cache if ctx.training else None
        return ctx.act(y)

    def backward(self, dy, ctx, need_input=True):
        g = self.params["weight"].compute(ctx.prec) if "weight" in self.params else None
        b = self.params["bias"].compute(ctx.prec) if "bias" in self.params else None
        cache, self.saved = self.saved, None
        dx, dg, db = LN.layernorm_backward(dy, self.shape, g, b, cache, need_input, self._impl(ctx))
        if dg is not None:
            self.params["weight"].accumulate(ctx.grad(dg))
        if db is not None:
            self.params["bias"].accumulate(ctx.grad(db))
        return ctx.grad(dx) if need_input else None


class Pool(Layer):
    """Max or average pool, 1-d or 2-d, any ceil_mode / count_include_pad."""

    def __init__(self, name, kind, dims, kernel, stride, padding, ceil_mode, count_include_pad=True):
        super().__init__(name)
        self.kind, self.dims = kind, dims
        one = (lambda v: v[0]) if dims == 1 else tuple
        self.args = (one(kernel), one(stride), one(padding), ceil_mode)
        self.cip = count_include_pad

    def forward(self, x, ctx):
        if self.kind == "maxpool":
            fwd = P.maxpool2d_forward if self.dims == 2 else P.maxpool1d_forward
            y, idx = fwd(x, *self.args)
            self.saved = (idx, x.shape) if ctx.training else None
            return y
        fwd = P.avgpool2d_forward if self.dims == 2 else P.avgpool1d_forward
        self.saved = x.shape if ctx.training else None
        return ctx.act(fwd(x, *self.args, self.cip))

    def backward(self, dy, ctx, need_input=True):
        s, self.saved = self.saved, None
        if self.kind == "maxpool":
            bwd = P.maxpool2d_backward if self.dims == 2 else P.maxpool1d_backward
            return ctx.grad(bwd(dy, *s))
        bwd = P.avgpool2d_backward if self.dims == 2 else P.avgpool1d_backward
        impl = "aten" if ctx.impl == "aten" else "explicit"
        return ctx.grad(bwd(dy, s, *self.args, self.cip, impl))


class AdaptiveAvgPool(Layer):
    kind = "adaptive_avgpool"

    def __init__(self, name, dims, output_size):
        super().__init__(name)
        self.dims, self.out = dims, tuple(output_size)

    def forward(self, x, ctx):
        self.saved = x.shape if ctx.training else None
        fwd = P.adaptive_avgpool2d_forward if self.dims == 2 else P.adaptive_avgpool1d_forward
        return ctx.act(fwd(x, self.out if self.dims == 2 else self.out[0]))

    def backward(self, dy, ctx, need_input=True):
        shape, self.saved = self.saved, None
        bwd = P.adaptive_avgpool2d_backward if self.dims == 2 else P.adaptive_avgpool1d_backward
        return ctx.grad(bwd(dy, shape))


class Upsample(Layer):
    """Nearest or bilinear upsampling to the captured output size."""

    kind = "upsample"

    def __init__(self, name, mode, size, align_corners):
        super().__init__(name)
        self.mode, self.size, self.align = mode, tuple(size), bool(align_corners)

    def forward(self, x, ctx):
        self.saved = x.shape if ctx.training else None
        if self.mode == "nearest":
            return U.upsample_nearest2d_forward(x, size=self.size)
        return ctx.act(U.upsample_bilinear2d_forward(x, size=self.size, align_corners=self.align))

    def backward(self, dy, ctx, need_input=True):
        shape, self.saved = self.saved, None
        if self.mode == "nearest":
            return ctx.grad(U.upsample_nearest2d_backward(dy, shape, size=self.size))
        return ctx.grad(U.upsample_bilinear2d_backward(dy, shape, size=self.size, align_corners=self.align))


class StochasticDepth(Layer):
    """Drops a residual branch per sample (``row``) or per batch with probability p when training."""

    kind = "stochastic_depth"

    def __init__(self, name, p, mode):
        super().__init__(name)
        self.p, self.mode = p, mode

    def forward(self, x, ctx):
        y, self.saved = M.stochastic_depth_forward(x, self.p, self.mode, ctx.training, ctx.generator)
        return ctx.act(y)

    def backward(self, dy, ctx, need_input=True):
        mask, self.saved = self.saved, None
        return ctx.grad(M.stochastic_depth_backward(dy, mask))


__all__ = ["Pointwise", "Conv1d", "LayerNorm", "Pool", "AdaptiveAvgPool", "Upsample", "StochasticDepth", "Param"]
