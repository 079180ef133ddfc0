"""Network layers: each wraps one kernel's forward / input-gradient / weight-gradient steps.

A layer keeps what its backward needs during ``forward`` (when training), applies the
precision policy (rounds its output to the activation format, its gradients to the
gradient format) and stores parameter gradients in ``Param.grad``.
"""

from __future__ import annotations

import torch

from ..kernels import activations as A
from ..kernels import conv as C
from ..kernels.macs import pair
from ..kernels import linear as L
from ..kernels import misc as M
from ..kernels import norm as N
from ..kernels import pool as P
from ..numerics.precision import Precision


class Param:
    """A trainable tensor: ``value`` (master copy), ``grad``, and a cached compute copy."""

    def __init__(self, value: torch.Tensor, trainable: bool = True):
        self.value = value
        self.grad: torch.Tensor | None = None
        self.trainable = trainable  # False: requires_grad=False in torch: no gradient, no update
        self._cached: tuple[str, torch.Tensor] | None = None

    def accumulate(self, g: torch.Tensor | None) -> None:
        """Add ``g`` to the gradient (a parameter used twice gets the sum); ignored when frozen."""
        if g is None or not self.trainable:
            return
        self.grad = g if self.grad is None else self.grad + g

    def compute(self, prec: Precision) -> torch.Tensor:
        """The value rounded to the policy's weight format (cached until the next update)."""
        if prec.weights == "fp32":
            return self.value
        if self._cached is None or self._cached[0] != prec.weights:
            self._cached = (prec.weights, prec.weight(self.value))
        return self._cached[1]

    def set(self, value: torch.Tensor) -> None:
        self.value = value
        self._cached = None


class Ctx:
    """What a pass needs: the policy, whether to keep tensors for backward, a generator."""

    def __init__(self, prec: Precision, training: bool, impl: str = "aten", generator=None):
        self.prec, self.training, self.impl, self.generator = prec, training, impl, generator

    def act(self, x):
        return x if self.prec.activations == "fp32" else self.prec.act(x)

    def grad(self, x):
        if x is None or self.prec.gradients == "fp32":
            return x
        return self.prec.grad(x, self.generator)


class Layer:
    """Base: subclasses set ``params`` (local name -> Param) and implement forward/backward."""

    kind = "layer"

    def __init__(self, name: str):
        self.name = name
        self.params: dict[str, Param] = {}
        self.buffers: dict[str, torch.Tensor] = {}
        self.saved = None

    def named_params(self):
        for k, p in self.params.items():
            yield (f"{self.name}.{k}" if self.name else k), p

    def named_buffers(self):
        for k, b in self.buffers.items():
            yield (f"{self.name}.{k}" if self.name else k), b

    def layers(self):
        yield self


class Conv2d(Layer):
    kind = "conv2d"

    def __init__(self, name, weight, bias, stride, padding, groups):
        super().__init__(name)
        self.params["weight"] = Param(weight)
        if bias is not None:
            self.params["bias"] = Param(bias)
        self.stride, self.padding, self.groups = pair(stride), pair(padding), groups

    def forward(self, x, ctx):
        w = self.params["weight"].compute(ctx.prec)
        b = self.params["bias"].compute(ctx.prec) if "bias" in self.params else None
        y = C.conv2d_forward(x, w, b, self.stride, self.padding, self.groups, ctx.impl, ctx.prec.native)
        self.saved = x if ctx.training else None
        return ctx.act(y)

    def backward(self, dy, ctx, need_input=True):
        w = self.params["weight"].compute(ctx.prec)
        bias = self.params.get("bias")
        if not (self.params["weight"].trainable or (bias is not None and bias.trainable)):  # frozen: dx only
            x, self.saved = self.saved, None
            return ctx.grad(C.conv2d_backward_input(dy, w, x.shape, self.stride, self.padding, self.groups,
                                                    ctx.impl, ctx.prec.native)) if need_input else None
        dx, dw, db = C.conv2d_backward(dy, self.saved, w, self.stride, self.padding, self.groups,
                                       "bias" in self.params, need_input, ctx.impl, ctx.prec.native)
        self.params["weight"].accumulate(ctx.grad(dw))
        if db is not None:
            self.params["bias"].accumulate(ctx.grad(db))
        self.saved = None
        return ctx.grad(dx)


class Linear(Layer):
    kind = "linear"

    def __init__(self, name, weight, bias):
        super().__init__(name)
        self.params["weight"] = Param(weight)
        if bias is not None:
            self.params["bias"] = Param(bias)

    def forward(self, x, ctx):
        w = self.params["weight"].compute(ctx.prec)
        b = self.params["bias"].compute(ctx.prec) if "bias" in self.params else None
        self.saved = x if ctx.training else None
        return ctx.act(L.linear_forward(x, w, b, ctx.prec.native))

    def backward(self, dy, ctx, need_input=True):
        w = self.params["weight"].compute(ctx.prec)
        dw, db = L.linear_backward_weight(dy, self.saved, "bias" in self.params, ctx.prec.native)
        self.params["weight"].accumulate(ctx.grad(dw))
        if db is not None:
            self.params["bias"].accumulate(ctx.grad(db))
        self.saved = None
        return ctx.grad(L.linear_backward_input(dy, w, ctx.prec.native)) if need_input else None


class BatchNorm2d(Layer):
    """Batch statistics when training (and the running stats updated), running stats otherwise.

    ``frozen_stats=True`` uses running statistics even in training (a frozen BN).
    """

    kind = "batchnorm2d"

    def __init__(self, name, weight, bias, running_mean, running_var, num_batches, eps, momentum,
                 frozen_stats=False):
        super().__init__(name)
        self.params["weight"], self.params["bias"] = Param(weight), Param(bias)
        self.buffers = {"running_mean": running_mean, "running_var": running_var,
                        "num_batches_tracked": num_batches}
        self.eps, self.momentum, self.frozen_stats = eps, momentum, frozen_stats

    def forward(self, x, ctx):
        g, b = self.params["weight"].compute(ctx.prec), self.params["bias"].compute(ctx.prec)
        rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
        if ctx.training and not self.frozen_stats:
            if ctx.impl == "aten":
                y, cache = N.batchnorm_train_aten(x, g, b, rm, rv, self.eps, self.momentum)
            else:
                y, cache = N.batchnorm_forward_train(x, g, b, self.eps)
                N.batchnorm_update_running(rm, rv, cache[2], cache[3], x.numel() // x.shape[1], self.momentum)
            self.buffers["num_batches_tracked"] += 1
            self.saved = (ctx.impl, cache)
        elif ctx.impl == "aten":
            y = N.batchnorm_eval_aten(x, g, b, rm, rv, self.eps)
            self.saved = ("eval_aten", x) if ctx.training else None
        else:
            y, inv_std = N.batchnorm_forward_eval(x, g, b, rm, rv, self.eps)
            self.saved = ("eval", x, inv_std) if ctx.training else None
        return ctx.act(y)

    def backward(self, dy, ctx, need_input=True):
        g = self.params["weight"].compute(ctx.prec)
        if self.saved[0] == "aten":
            dx, dg, db = N.batchnorm_backward_aten(dy, g, self.saved[1], self.eps)
        elif self.saved[0] == "im2col":
            dx, dg, db = N.batchnorm_backward_train(dy, g, self.saved[1])
        elif self.saved[0] == "eval_aten":
            dx, dg, db = N.batchnorm_backward_eval_aten(dy, self.saved[1], g, self.buffers["running_mean"],
                                                        self.buffers["running_var"], self.eps)
        else:
            dx, dg, db = N.batchnorm_backward_eval(dy, self.saved[1], g, self.buffers["running_mean"],
                                                   self.saved[2])
        self.params["weight"].accumulate(ctx.grad(dg))
        self.params["bias"].accumulate(ctx.grad(db))
        self.saved = None
        return ctx.grad(dx)


class Activation(Layer):
    """ReLU (saves the output), ReLU6 and LeakyReLU (save the input)."""

    def __init__(self, name, kind, slope=0.01):
        super().__init__(name)
        self.kind, self.slope = kind, slope

    def forward(self, x, ctx):
        if self.kind == "relu":
            y = A.relu_forward(x)
            self.saved = y if ctx.training else None
            return y
        self.saved = x if ctx.training else None
        return A.relu6_forward(x) if self.kind == "relu6" else ctx.act(A.leaky_relu_forward(x, self.slope))

    def backward(self, dy, ctx, need_input=True):
        s, self.saved = self.saved, None
        if self.kind == "relu":
            return A.relu_backward(dy, s)
        if self.kind == "relu6":
            return A.relu6_backward(dy, s)
        return ctx.grad(A.leaky_relu_backward(dy, s, self.slope))


class MaxPool2d(Layer):
    kind = "maxpool2d"

    def __init__(self, name, kernel, stride, padding):
        super().__init__(name)
        self.kernel, self.stride, self.padding = kernel, stride, padding

    def forward(self, x, ctx):
        y, idx = P.maxpool_forward(x, self.kernel, self.stride, self.padding)
        self.saved = (idx, x.shape) if ctx.training else None
        return y

    def backward(self, dy, ctx, need_input=True):
        (idx, shape), self.saved = self.saved, None
        return ctx.grad(P.maxpool_backward(dy, idx, shape))


class AvgPool2d(Layer):
    kind = "avgpool2d"

    def __init__(self, name, kernel, stride, padding):
        super().__init__(name)
        self.kernel, self.stride, self.padding = kernel, stride, padding

    def forward(self, x, ctx):
        self.saved = x.shape if ctx.training else None
        return ctx.act(P.avgpool_forward(x, self.kernel, self.stride, self.padding))

    def backward(self, dy, ctx, need_input=True):
        shape, self.saved = self.saved, None
        return ctx.grad(P.avgpool_backward(dy, shape, self.kernel, self.stride, self.padding))


class GlobalAvgPool(Layer):
    kind = "global_avgpool"

    def forward(self, x, ctx):
        self.saved = x.shape if ctx.training else None
        return ctx.act(P.global_avgpool_forward(x))

    def backward(self, dy, ctx, need_input=True):
        shape, self.saved = self.saved, None
        return ctx.grad(P.global_avgpool_backward(dy, shape))


class Flatten(Layer):
    kind = "flatten"

    def forward(self, x, ctx):
        self.saved = x.shape if ctx.training else None
        return M.flatten_forward(x)

    def backward(self, dy, ctx, need_input=True):
        shape, self.saved = self.saved, None
        return M.flatten_backward(dy, shape)


class Dropout(Layer):
    kind = "dropout"

    def __init__(self, name, p):
        super().__init__(name)
        self.p = p

    def forward(self, x, ctx):
        if not ctx.training:
            return x
        y, self.saved = M.dropout_forward(x, self.p, ctx.generator)
        return ctx.act(y)

    def backward(self, dy, ctx, need_input=True):
        mask, self.saved = self.saved, None
        return ctx.grad(M.dropout_backward(dy, mask))


class Identity(Layer):
    kind = "identity"

    def forward(self, x, ctx):
        return x

    def backward(self, dy, ctx, need_input=True):
        return dy
