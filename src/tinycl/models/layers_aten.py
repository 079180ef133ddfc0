"""Engine layers whose three steps are single ATen kernels (no autograd): the ops real models use
beyond the core set. Each forward keeps what its backward kernel reads.

- ``Conv``: dilated and transposed convolutions (``aten.convolution`` / ``convolution_backward``);
- ``GroupNorm``, ``Softmax`` / ``LogSoftmax``, ``PReLU`` (a parameter per channel or one);
- ``Unary``: ELU, Softplus, Mish;
- ``Pad``: constant zero padding (``F.pad``), whose backward is a slice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .layers import Layer

A = torch.ops.aten


class Conv(Layer):
    """Any convolution ATen runs: dilation, transposed (``output_padding``), groups, 1-d or 2-d."""

    kind = "conv_general"

    def __init__(self, name, stride, padding, dilation, transposed, output_padding, groups):
        super().__init__(name)
        self.args = (list(stride), list(padding), list(dilation), bool(transposed), list(output_padding), groups)

    def forward(self, x, ctx):
        w = self.params["weight"].compute(ctx.prec)
        b = self.params["bias"].compute(ctx.prec) if "bias" in self.params else None
        self.saved = x if ctx.training else None
        return ctx.act(A.convolution(x, w, b, *self.args))

    def backward(self, dy, ctx, need_input=True):
        w = self.params["weight"].compute(ctx.prec)
        x, self.saved = self.saved, None
        bias = self.params.get("bias")
        mask = (need_input, self.params["weight"].trainable, bias is not None and bias.trainable)
        dx, dw, db = A.convolution_backward(dy, x, w, None if bias is None else [bias.value.shape[0]],
                                            *self.args, mask)
        if mask[1]:
            self.params["weight"].accumulate(ctx.grad(dw))
        if mask[2]:
            self.params["bias"].accumulate(ctx.grad(db))
        return ctx.grad(dx) if need_input else None


class GroupNorm(Layer):
    kind = "groupnorm"

    def __init__(self, name, groups, eps):
        super().__init__(name)
        self.groups, self.eps = groups, eps

    def forward(self, x, ctx):
        g = self.params["weight"].compute(ctx.prec) if "weight" in self.params else None
        b = self.params["bias"].compute(ctx.prec) if "bias" in self.params else None
        n, c = x.shape[:2]
        hw = x[0, 0].numel()
        y, mean, rstd = A.native_group_norm(x, g, b, n, c, hw, self.groups, self.eps)
        self.saved = (x, mean, rstd) if ctx.training else None
        return ctx.act(y)

    def backward(self, dy, ctx, need_input=True):
        g = self.params["weight"].compute(ctx.prec) if "weight" in self.params else None
        (x, mean, rstd), self.saved = self.saved, None
        n, c = x.shape[:2]
        affine = "weight" in self.params
        dx, dg, db = A.native_group_norm_backward(dy.contiguous(), x.contiguous(), mean, rstd, g, n, c,
                                                  x[0, 0].numel(), self.groups, (need_input, affine, affine))
        if affine:
            self.params["weight"].accumulate(ctx.grad(dg))
            self.params["bias"].accumulate(ctx.grad(db))
        return ctx.grad(dx) if need_input else None


class Softmax(Layer):
    """Softmax or log-softmax over one dimension (never the batch)."""

    def __init__(self, name, dim, log):
        super().__init__(name)
        self.dim, self.log = dim, log
        self.kind = "log_softmax" if log else "softmax"

    def forward(self, x, ctx):
        y = (A._log_softmax if self.log else A._softmax)(x, self.dim, False)
        self.saved = y if ctx.training else None
        return ctx.act(y)

    def backward(self, dy, ctx, need_input=True):
        y, self.saved = self.saved, None
        fn = A._log_softmax_backward_data if self.log else A._softmax_backward_data
        return ctx.grad(fn(dy, y, self.dim, y.dtype))


class PReLU(Layer):
    kind = "prelu"

    def forward(self, x, ctx):
        a = self.params["weight"].compute(ctx.prec)
        self.saved = x if ctx.training else None
        return ctx.act(F.prelu(x, a))

    def backward(self, dy, ctx, need_input=True):
        a = self.params["weight"].compute(ctx.prec)
        x, self.saved = self.saved, None
        shape = [1] * x.dim()
        if a.numel() > 1:
            shape[1] = a.numel()
        dx, da = A._prelu_kernel_backward(dy, x, a.reshape(shape))
        self.params["weight"].accumulate(ctx.grad(da.sum([d for d in range(x.dim()) if shape[d] == 1]).reshape(a.shape)))
        return ctx.grad(dx) if need_input else None


class Unary(Layer):
    """ELU (alpha), Softplus (beta, threshold) and Mish, with their ATen backward kernels."""

    def __init__(self, name, kind, **kw):
        super().__init__(name)
        self.kind, self.kw = kind, kw

    def forward(self, x, ctx):
        k = self.kw
        if self.kind == "elu":
            y = A.elu(x, k["alpha"], 1.0, 1.0)
        elif self.kind == "softplus":
            y = A.softplus(x, k["beta"], k["threshold"])
        else:
            y = A.mish(x)
        self.saved = x if ctx.training else None
        return ctx.act(y)

    def backward(self, dy, ctx, need_input=True):
        x, self.saved = self.saved, None
        k = self.kw
        if self.kind == "elu":
            return ctx.grad(A.elu_backward(dy, k["alpha"], 1.0, 1.0, False, x))
        if self.kind == "softplus":
            return ctx.grad(A.softplus_backward(dy, x, k["beta"], k["threshold"]))
        return ctx.grad(A.mish_backward(dy, x))


class Pad(Layer):
    """Constant zero padding; the gradient is the un-padded slice of ``dy``."""

    kind = "pad"

    def __init__(self, name, pad):
        super().__init__(name)
        self.pad = tuple(pad)   # F.pad order: last dim first, (left, right) pairs

    def forward(self, x, ctx):
        self.saved = x.shape if ctx.training else None
        return F.pad(x, self.pad)

    def backward(self, dy, ctx, need_input=True):
        shape, self.saved = self.saved, None
        index = [slice(None)] * dy.dim()
        for i in range(len(self.pad) // 2):
            d = dy.dim() - 1 - i
            index[d] = slice(self.pad[2 * i], self.pad[2 * i] + shape[d])
        return dy[tuple(index)]
