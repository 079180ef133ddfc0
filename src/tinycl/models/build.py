"""One engine op per graph node: the table from a node's ``op`` to the layer that runs it."""

from __future__ import annotations

import torch

from ..errors import UnsupportedLayerError
from ..graph.ir import Node
from . import attention_ops as AO
from . import graph_ops as G
from . import layers as T
from . import layers_aten as AT
from . import layers_extra as X

# Extra primitives (e.g. RangeNorm2d): graph op name -> fn(module, path) -> Layer.
CUSTOM_BUILDERS: dict[str, callable] = {}


class As4d(T.Layer):
    """Runs a 4-d layer (conv2d, batch norm, 2-d pool) on (N, C) or (N, C, L) tensors."""

    def __init__(self, inner: T.Layer):
        super().__init__(inner.name)
        self.inner, self.kind, self.params, self.buffers = inner, inner.kind, inner.params, inner.buffers

    @staticmethod
    def _to4d(x):
        return x.reshape(*x.shape, *(1,) * (4 - x.dim())) if x.dim() < 3 else x.unsqueeze(2)

    def forward(self, x, ctx):
        self.saved = x.dim()
        y = self.inner.forward(self._to4d(x), ctx)
        return y.reshape(y.shape[:2]) if self.saved == 2 else y.squeeze(2)

    def backward(self, dy, ctx, need_input=True):
        rank, self.saved = self.saved, None
        dx = self.inner.backward(self._to4d(dy), ctx, need_input)
        return None if dx is None else (dx.reshape(dx.shape[:2]) if rank == 2 else dx.squeeze(2))


class LinearND(T.Linear):
    """Linear on (N, ..., F) inputs: the leading dimensions are flattened into rows."""

    def forward(self, x, ctx):
        self.shape = x.shape
        if x.dim() == 2:
            return super().forward(x, ctx)
        y = super().forward(x.reshape(-1, x.shape[-1]), ctx)
        return y.reshape(*x.shape[:-1], y.shape[-1])

    def backward(self, dy, ctx, need_input=True):
        if dy.dim() == 2:
            return super().backward(dy, ctx, need_input)
        dx = super().backward(dy.reshape(-1, dy.shape[-1]), ctx, need_input)
        return None if dx is None else dx.reshape(self.shape)


class ParamValue(T.Layer):
    """A parameter read as a tensor (``x * self.gamma``); its gradient accumulates into the parameter."""

    kind = "param"

    def forward(self, x, ctx):
        return self.params["value"].compute(ctx.prec)

    def backward(self, dy, ctx, need_input=True):
        self.params["value"].accumulate(ctx.grad(dy))
        return None


class ConstValue(T.Layer):
    kind = "const"

    def forward(self, x, ctx):
        return self.buffers["value"]

    def backward(self, dy, ctx, need_input=True):
        return None


def _conv(node, p):
    a = node.attrs
    return T.Conv2d(node.name, p["weight"].value, p["bias"].value if "bias" in p else None, a["stride"],
                    a["padding"], a["groups"])


def _bn(node, p, b, frozen):
    """Batch norm; without affine parameters, a fixed scale 1 and shift 0 (not parameters)."""
    a = node.attrs
    c = a["channels"]
    mean = b["running_mean"]
    for role, fill in (("weight", 1.0), ("bias", 0.0)):
        if role not in p:
            p[role] = T.Param(torch.full((c,), fill, dtype=mean.dtype), trainable=False)
    return T.BatchNorm2d(node.name, p["weight"].value, p["bias"].value, b["running_mean"], b["running_var"],
                         b["num_batches_tracked"], a["eps"], a["momentum"], frozen_stats=frozen)


def _pool(node):
    a = node.attrs
    if a["dims"] == 2 and not a["ceil_mode"] and (node.op == "maxpool" or a["count_include_pad"]):
        cls = T.MaxPool2d if node.op == "maxpool" else T.AvgPool2d     # the first-wave layers
        return cls(node.name, a["kernel"], a["stride"], a["padding"])
    return X.Pool(node.name, node.op, a["dims"], a["kernel"], a["stride"], a["padding"], a["ceil_mode"],
                  a.get("count_include_pad", True))


def _adaptive(node):
    a = node.attrs
    if a["dims"] == 2 and all(o == 1 for o in a["output_size"]):
        return T.GlobalAvgPool(node.name)
    return X.AdaptiveAvgPool(node.name, a["dims"], a["output_size"])


def _make(node: Node, p: dict, b: dict, frozen: bool) -> T.Layer:
    a, op, name = node.attrs, node.op, node.name
    simple = {
        "relu": lambda: T.Activation(name, "relu"), "relu6": lambda: T.Activation(name, "relu6"),
        "leaky_relu": lambda: T.Activation(name, "leaky_relu", a.get("slope", 0.01)),
        "dropout": lambda: T.Dropout(name, 0.0 if frozen else a["p"]),
        "reshape": lambda: G.Reshape(name, node.shape, a.get("no_batch", False), a.get("in_batch"), a.get("out_batch")),
        "matmul": lambda: AO.MatMul(name),
        "sdpa": lambda: AO.Attention(name, a["causal"], a["scale"], a["mask"]),
        "take": lambda: AO.Take(name, a["dim"]), "linear_t": lambda: AO.LinearT(name),
        "expand": lambda: AO.Expand(name, node.shape, node.batch, a.get("src_batch")),
        "permute": lambda: G.Permute(name, a["dims"]),
        "slice": lambda: G.Slice(name, a["index"]), "detach": lambda: G.Detach(name),
        "mean": lambda: G.Reduce(name, "mean", a["dims"], a["keepdim"]),
        "sum": lambda: G.Reduce(name, "sum", a["dims"], a["keepdim"]),
        "cat": lambda: G.Cat(name, a["dim"]), "split": lambda: G.Split(name, a["dim"], a["sizes"], a["squeeze"]),
        "clamp": lambda: G.Clamp(name, a["min"], a["max"]),
        "hardtanh": lambda: G.Clamp(name, a["min"], a["max"]),
        "param": lambda: ParamValue(name), "const": lambda: ConstValue(name), "getitem": lambda: T.Identity(name),
        "maxpool": lambda: _pool(node), "avgpool": lambda: _pool(node), "adaptive_avgpool": lambda: _adaptive(node),
    }
    if op in simple:
        return simple[op]()
    if op in ("add", "sub", "mul", "div"):
        return G.Binary(name, op, a.get("scalar"), a.get("reverse", False))
    if op in X.Pointwise.KINDS:
        return X.Pointwise(name, op, a.get("approximate", "none"))
    if op == "conv2d":
        return _conv(node, p)
    if op == "conv1d":
        return X.Conv1d(name, a["stride"][0], a["padding"][0], a["groups"])
    if op == "layernorm":
        return X.LayerNorm(name, a["normalized_shape"], a["eps"])
    if op == "upsample":
        return X.Upsample(name, a["mode"], node.shape[1:], a["align_corners"])
    if op == "stochastic_depth":
        return X.StochasticDepth(name, 0.0 if frozen else a["p"], a["mode"])
    if op == "linear":  # (N, F) inputs take the plain layer: one call less per pass
        plain = node.batch is None and len(node.shape) == 1
        return (T.Linear if plain else LinearND)(name, p["weight"].value, p["bias"].value if "bias" in p else None)
    if op == "batchnorm":
        layer = _bn(node, p, b, frozen)
        rank = len(node.shape) + (node.batch is None)   # a folded batch is inside node.shape
        return As4d(layer) if rank != 4 else layer
    if op == "conv_general":
        return AT.Conv(name, a["stride"], a["padding"], a["dilation"], a["transposed"], a["output_padding"], a["groups"])
    if op == "groupnorm":
        return AT.GroupNorm(name, a["groups"], a["eps"])
    if op == "softmax":
        return AT.Softmax(name, a["dim"], a["log"])
    if op == "prelu":
        return AT.PReLU(name)
    if op in ("elu", "softplus", "mish"):
        return AT.Unary(name, op, **{k: v for k, v in a.items() if k in ("alpha", "beta", "threshold")})
    if op == "pad":
        return AT.Pad(name, a["pad"])
    if op in CUSTOM_BUILDERS:
        return CUSTOM_BUILDERS[op](a["module"], name)
    raise UnsupportedLayerError(f"op '{op}' of node '{name}' (module {node.module or '<root>'}) "
                                f"is not supported by the engine")


def build_op(node: Node, pmap: dict, bmap: dict, frozen: bool) -> T.Layer:
    """The engine op for ``node``, its parameters bound to the shared :class:`Param` objects."""
    p = {k: pmap[v] for k, v in node.params.items()}
    b = {k: bmap[v] for k, v in node.buffers.items()}
    layer = _make(node, p, b, frozen)
    layer.params = p
    layer.buffers = b
    if isinstance(layer, As4d):
        layer.inner.params, layer.inner.buffers = p, b
    return layer
