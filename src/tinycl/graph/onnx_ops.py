"""The ONNX op table: each ONNX node lowered to the tinycl primitive torch capture makes for it.

``lower(imp, node)`` appends one node (two for Split: the split and its ``getitem`` reads) through
:meth:`tinycl.graph.onnx.Importer.add`, or returns :data:`ALIAS` for a node that passes its input
through (Identity, Dropout). Dimensions in attrs count the batch (dim 0), as in
:mod:`tinycl.graph.functions`.
"""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedLayerError

ALIAS = object()
_BIG = 2 ** 62


def _attrs(node) -> dict:
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _f32(v) -> float:
    """A float attribute as written before float32 storage (9.99999975e-06 -> 1e-05)."""
    return float(str(np.float32(v)))


def _s(v):
    return v.decode() if isinstance(v, bytes) else v


def _geometry(imp, node, a: dict, kernel: tuple, dims: int) -> tuple[tuple, tuple]:
    """(stride, symmetric padding) of a Conv / pool from strides, pads and auto_pad."""
    stride = tuple(int(s) for s in a.get("strides", (1,) * dims))
    auto = _s(a.get("auto_pad", "NOTSET"))
    if auto in ("NOTSET", ""):
        pads = tuple(int(p) for p in a.get("pads", (0,) * 2 * dims))
        if pads[:dims] != pads[dims:]:
            raise imp.error(node, f"has asymmetric pads {list(pads)}; tinycl needs begin == end")
        return stride, pads[:dims]
    if auto == "VALID":
        return stride, (0,) * dims
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        size = imp.sample_shape(node.input[0], node)[1:]
        total = [max((-(-s // st) - 1) * st + k - s, 0) for s, st, k in zip(size, stride, kernel)]
        if any(t % 2 for t in total):
            raise imp.error(node, f"has auto_pad={auto} that pads asymmetrically (kernel {list(kernel)}, "
                                  f"stride {list(stride)}); tinycl needs symmetric padding")
        return stride, tuple(t // 2 for t in total)
    raise imp.error(node, f"has auto_pad={auto!r}; supported: NOTSET, VALID, SAME_UPPER, SAME_LOWER")


def _conv(imp, node, a):
    w = imp.const(node.input[1], node, "weight")
    dims = w.ndim - 2
    if dims not in (1, 2):
        raise imp.error(node, f"is a {dims}-d convolution; tinycl supports 1-d and 2-d")
    if any(d != 1 for d in a.get("dilations", (1,) * dims)):
        raise imp.error(node, f"has dilations {list(a['dilations'])}; only dilation 1 is supported")
    k = tuple(int(s) for s in w.shape[2:])
    stride, pad = _geometry(imp, node, a, k, dims)
    groups = int(a.get("group", 1))
    base, _ = imp.base_name(node, node.input[1])
    params = {"weight": imp.param(node.input[1], "weight", base, node)}
    if len(node.input) > 2 and node.input[2]:
        params["bias"] = imp.param(node.input[2], "bias", base, node)
    attrs = dict(kernel=k, stride=stride, padding=pad, groups=groups, in_channels=int(w.shape[1]) * groups,
                 out_channels=int(w.shape[0]))
    imp.add(node, f"conv{dims}d", [node.input[0]], attrs, params, weight=node.input[1])


def _linear(imp, node, weight: str, bias: str | None, transpose: bool, out_node=None):
    w = imp.const(weight, node, "weight")
    if w.ndim != 2:
        raise imp.error(node, f"has a weight of rank {w.ndim}; a linear layer needs rank 2")
    named = weight if imp.base_name(node, weight)[1] or not bias else bias   # MatMul weights are 'onnx::MatMul_7'
    base, _ = imp.base_name(node, named)
    params = {"weight": imp.param(weight, "weight", base, node, transpose=transpose)}
    out_f, in_f = (w.shape[1], w.shape[0]) if transpose else w.shape
    if bias:
        b = imp.const(bias, node, "bias")
        if b.size != out_f:
            raise imp.error(node, f"has a bias of shape {list(b.shape)}; a linear layer needs ({out_f},)")
        if b.ndim != 1:
            imp.consts[bias] = b.reshape(-1)
        params["bias"] = imp.param(bias, "bias", base, node)
    shape = imp.sample_shape((out_node or node).output[0], out_node or node)
    name = imp.add(node, "linear", [node.input[0]], {"in_features": int(in_f), "out_features": int(out_f)}, params,
                   shape=shape, weight=named)
    if out_node is not None:
        imp.name_of[out_node.output[0]] = name
        imp.data.add(out_node.output[0])


def _gemm(imp, node, a):
    if a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or a.get("transA", 0) or a.get("transB", 0) != 1:
        raise imp.error(node, "is supported only as transB=1, transA=0, alpha=beta=1 (torch's nn.Linear)")
    _linear(imp, node, node.input[1], node.input[2] if len(node.input) > 2 else None, False)


def _matmul(imp, node, a):
    if node.input[1] not in imp.consts or not imp.is_data(node.input[0]):
        return _matmul2(imp, node)
    users = imp.consumers.get(node.output[0], [])
    add = users[0] if len(users) == 1 and users[0] is not None and users[0].op_type == "Add" else None
    bias = None
    if add is not None:
        other = [x for x in add.input if x != node.output[0]]
        w = imp.consts[node.input[1]]
        if len(other) == 1 and other[0] in imp.consts and imp.consts[other[0]].size == w.shape[-1] \
                and imp.consts[other[0]].ndim <= 1:
            bias = other[0]
            imp.skip.add(add.output[0])
        else:
            add = None
    _linear(imp, node, node.input[1], bias, True, out_node=add)


def _matmul2(imp, node):
    """MatMul of two tensors (attention's ``q @ k^T``), or of a constant and a tensor: ``matmul``.
    Every tensor here keeps the batch first, so a product never sums over it."""
    x, y = node.input[0], node.input[1]
    for v in (x, y):
        if not imp.is_data(v) and v not in imp.consts:
            raise imp.error(node, f"reads '{v}', neither a tensor of the batch nor a constant")
    ins = [v if imp.is_data(v) else imp.const_node(node, v) for v in (x, y)]
    if imp.is_data(y) and imp.rank(y, node) < 3 or imp.is_data(x) and imp.rank(x, node) < 2:
        raise imp.error(node, "has the batch in a dimension the product sums over")
    imp.add(node, "matmul", ins, {})


def _softmax(imp, node, a):
    rank = imp.rank(node.input[0], node)
    axis = int(a.get("axis", -1 if imp.opset >= 13 else 1)) % rank
    if imp.opset < 13 and axis != rank - 1:
        raise imp.error(node, f"has axis {axis} before opset 13 (a softmax over flattened dims); re-export "
                              f"with opset 13 or later")
    imp.add(node, "softmax", [node.input[0]],
            {"dim": _axis(imp, node, axis, rank), "log": node.op_type == "LogSoftmax"})


def _batchnorm(imp, node, a):
    if any(o for o in node.output[1:] if imp.consumers.get(o)):
        raise imp.error(node, "uses its training-mode outputs (running mean / variance)")
    x = node.input[0]
    base, _ = imp.base_name(node, node.input[1])
    params = {"weight": imp.param(node.input[1], "weight", base, node),
              "bias": imp.param(node.input[2], "bias", base, node)}
    buffers = {"running_mean": imp.param(node.input[3], "running_mean", base, node, buffer=True),
               "running_var": imp.param(node.input[4], "running_var", base, node, buffer=True)}
    import torch
    tracked = f"{base}.num_batches_tracked"
    while tracked in imp.buffers or tracked in imp.params:
        tracked += "_"
    imp.buffers[tracked] = torch.tensor(0, dtype=torch.long)
    buffers["num_batches_tracked"] = tracked
    momentum = round(1.0 - _f32(a.get("momentum", 0.9)), 7)   # ONNX: running = m * running + (1 - m) * batch
    attrs = dict(eps=_f32(a.get("epsilon", 1e-5)), momentum=momentum, channels=imp.sample_shape(x, node)[0])
    imp.add(node, "batchnorm", [x], attrs, params, buffers, weight=node.input[1])


def _layernorm(imp, node, a):
    x = node.input[0]
    shape = imp.sample_shape(x, node)
    axis = int(a.get("axis", -1)) % (len(shape) + 1)
    if axis == 0:
        raise imp.error(node, "normalizes across the batch dimension (axis 0)")
    norm = tuple(shape[axis - 1:])
    base, _ = imp.base_name(node, node.input[1])
    params = {}
    for role, i in (("weight", 1), ("bias", 2)):
        if len(node.input) > i and node.input[i]:
            v = imp.const(node.input[i], node, role)
            if v.size != int(np.prod(norm)):
                raise imp.error(node, f"has a {role} of shape {list(v.shape)}; tinycl needs {list(norm)}")
            imp.consts[node.input[i]] = v.reshape(norm)
            params[role] = imp.param(node.input[i], role, base, node)
    imp.add(node, "layernorm", [x], {"normalized_shape": norm, "eps": _f32(a.get("epsilon", 1e-5))}, params,
            weight=node.input[1])


def _clip(imp, node, a):
    if imp.opset < 11:
        lo, hi = a.get("min"), a.get("max")
    else:
        lo, hi = (imp.const(node.input[i], node, "bound") if len(node.input) > i else None for i in (1, 2))
    lo = None if lo is None else _f32(np.asarray(lo).reshape(-1)[0])
    hi = None if hi is None else _f32(np.asarray(hi).reshape(-1)[0])
    if (lo, hi) == (0.0, 6.0):
        return imp.add(node, "relu6", [node.input[0]], {})
    imp.add(node, "clamp", [node.input[0]], {"min": lo, "max": hi})


def _hardsigmoid(imp, node, a):
    alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
    if abs(alpha - 1 / 6) > 1e-6 or abs(beta - 0.5) > 1e-6:
        raise imp.error(node, f"has alpha={alpha:g}, beta={beta:g}; tinycl supports torch's hardsigmoid "
                              f"(alpha=1/6, beta=0.5)")
    imp.add(node, "hardsigmoid", [node.input[0]], {})


def _binary(imp, node, a):
    op = node.op_type.lower()
    x, y = node.input[0], node.input[1]
    dx, dy = imp.is_data(x), imp.is_data(y)
    if dx and dy:
        return imp.add(node, op, [x, y], {})
    c = y if dx else x
    v = imp.consts.get(c)
    if v is None:
        raise imp.error(node, f"reads '{c}', neither a tensor of the batch nor a constant (a random mask? "
                              f"export the model in eval mode)")
    if v.size == 1:
        return imp.add(node, op, [x if dx else y], {"scalar": _f32(v.reshape(-1)[0]), "reverse": not dx})
    ref = imp.const_node(node, c)
    imp.add(node, op, [x, ref] if dx else [ref, y], {})


def _axis(imp, node, axis: int, rank: int) -> int:
    axis = int(axis) % rank
    if axis == 0:
        raise imp.error(node, "works across the batch dimension (axis 0)")
    return axis


def _concat(imp, node, a):
    xs = list(node.input)
    for x in xs:
        if not imp.is_data(x):
            raise imp.error(node, f"concatenates a constant '{x}'; tinycl needs tensors of the batch")
    imp.add(node, "cat", xs, {"dim": _axis(imp, node, a["axis"], imp.rank(xs[0], node))})


def _split(imp, node, a):
    x = node.input[0]
    dim = _axis(imp, node, a.get("axis", 0), imp.rank(x, node))
    shapes = tuple(imp.sample_shape(o, node) for o in node.output)
    sizes = tuple(s[dim - 1] for s in shapes)
    name = imp.add(node, "split", [x], {"dim": dim, "sizes": sizes, "squeeze": False}, shape=shapes)
    for i, o in enumerate(node.output):
        if not o or not imp.consumers.get(o):
            continue
        stem = imp.unique(f"{name}.{i}", False)
        from .ir import Node
        imp.nodes.append(Node(stem, "getitem", [name], {"index": i}, shape=shapes[i], module=imp.nodes[-1].module))
        imp.name_of[o] = stem
        imp.data.add(o)


def _slice(imp, node, a):
    x = node.input[0]
    rank = imp.rank(x, node)
    if imp.opset < 10:
        starts, ends = a["starts"], a["ends"]
        axes, steps = a.get("axes", range(len(starts))), [1] * len(starts)
    else:
        def get(i, role):
            return imp.const(node.input[i], node, role) if len(node.input) > i and node.input[i] else None
        starts, ends = get(1, "starts").tolist(), get(2, "ends").tolist()
        axes = get(3, "axes")
        axes = range(len(starts)) if axes is None else axes.tolist()
        steps = get(4, "steps")
        steps = [1] * len(starts) if steps is None else steps.tolist()
    index = [slice(None)] * rank
    for s, e, ax, st in zip(starts, ends, axes, steps):
        ax = int(ax) % rank
        if st <= 0:
            raise imp.error(node, f"has step {st}; tinycl needs positive steps")
        sl = slice(None if s == 0 else int(s), None if e >= _BIG else int(e), None if st == 1 else int(st))
        if ax == 0:
            if sl != slice(None):
                raise imp.error(node, "slices the batch dimension")
            continue
        index[ax] = sl
    while len(index) > 1 and index[-1] == slice(None):
        index.pop()
    imp.add(node, "slice", [x], {"index": tuple(index)})


def _reshape(imp, node, a):
    if node.op_type == "Flatten" and int(a.get("axis", 1)) % max(imp.rank(node.input[0], node), 1) == 0:
        raise imp.error(node, "flattens the batch dimension into the features (axis 0)")
    imp.add(node, "reshape", [node.input[0]], {})


def _transpose(imp, node, a):
    rank = imp.rank(node.input[0], node)
    perm = tuple(int(p) for p in a.get("perm", range(rank - 1, -1, -1)))
    if perm[0] != 0:
        raise imp.error(node, f"moves the batch dimension (perm {list(perm)})")
    imp.add(node, "permute", [node.input[0]], {"dims": perm})


def _reduce(imp, node, a):
    x = node.input[0]
    rank = imp.rank(x, node)
    axes = a.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = imp.const(node.input[1], node, "axes").tolist()
    if axes is None or len(axes) == 0:
        if a.get("noop_with_empty_axes", 0):
            return ALIAS
        raise imp.error(node, "reduces over every dimension including the batch")
    dims = tuple(sorted(_axis(imp, node, d, rank) for d in axes))
    imp.add(node, "mean" if node.op_type == "ReduceMean" else "sum", [x],
            {"dims": dims, "keepdim": bool(a.get("keepdims", 1))})


def _global_pool(imp, node, a):
    dims = imp.rank(node.input[0], node) - 2
    if dims not in (1, 2):
        raise imp.error(node, f"pools over {dims} spatial dimensions; tinycl supports 1 and 2")
    imp.add(node, "adaptive_avgpool", [node.input[0]], {"output_size": (1,) * dims, "dims": dims})


def _pool(imp, node, a):
    dims = imp.rank(node.input[0], node) - 2
    if dims not in (1, 2):
        raise imp.error(node, f"pools over {dims} spatial dimensions; tinycl supports 1 and 2")
    k = tuple(int(s) for s in a["kernel_shape"])
    stride, pad = _geometry(imp, node, a, k, dims)
    attrs = dict(kernel=k, stride=stride, padding=pad, ceil_mode=bool(a.get("ceil_mode", 0)), dims=dims)
    if node.op_type == "MaxPool":
        if any(d != 1 for d in a.get("dilations", (1,) * dims)) or a.get("storage_order", 0) or \
                (len(node.output) > 1 and imp.consumers.get(node.output[1])):
            raise imp.error(node, "needs dilation 1, storage_order 0 and no indices output")
        return imp.add(node, "maxpool", [node.input[0]], attrs)
    attrs["count_include_pad"] = bool(a.get("count_include_pad", 0))
    imp.add(node, "avgpool", [node.input[0]], attrs)


def _resize(imp, node, a):
    x = node.input[0]
    ins, outs = imp.sample_shape(x, node), imp.sample_shape(node.output[0], node)
    if len(ins) != 3 or ins[0] != outs[0]:
        raise imp.error(node, f"resizes {list(ins)} to {list(outs)}; tinycl upsamples the spatial dims of (C, H, W)")
    mode, ctm = _s(a.get("mode", "nearest")), _s(a.get("coordinate_transformation_mode", "half_pixel"))
    if a.get("antialias", 0):
        raise imp.error(node, "uses antialias; not supported")
    if mode == "nearest" and ctm == "asymmetric" and _s(a.get("nearest_mode", "round_prefer_floor")) == "floor":
        return imp.add(node, "upsample", [x], {"mode": "nearest", "align_corners": None})
    if mode == "linear" and ctm in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        return imp.add(node, "upsample", [x], {"mode": "bilinear", "align_corners": ctm == "align_corners"})
    raise imp.error(node, f"has mode={mode!r} with coordinate_transformation_mode={ctm!r}; tinycl supports torch's "
                          f"nearest (asymmetric, floor) and bilinear (half_pixel or align_corners)")


def _alias(imp, node, a):
    if node.op_type == "Dropout" and len(node.output) > 1 and imp.consumers.get(node.output[1]):
        raise imp.error(node, "uses its mask output")
    if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
        if bool(np.asarray(imp.const(node.input[2], node, "training_mode")).reshape(-1)[0]):
            raise imp.error(node, "runs in training mode; export the model with dropout in eval mode")
    return ALIAS


def _simple(op, **fixed):
    def fn(imp, node, a):
        attrs = {k: (f(a) if callable(f) else f) for k, f in fixed.items()}
        imp.add(node, op, [node.input[0]], attrs)
    return fn


OPS = {
    "Conv": _conv, "Gemm": _gemm, "MatMul": _matmul, "BatchNormalization": _batchnorm,
    "LayerNormalization": _layernorm, "Relu": _simple("relu"), "Clip": _clip,
    "LeakyRelu": _simple("leaky_relu", slope=lambda a: _f32(a.get("alpha", 0.01))),
    "HardSwish": _simple("hardswish"), "HardSigmoid": _hardsigmoid, "Sigmoid": _simple("sigmoid"),
    "Tanh": _simple("tanh"), "Gelu": _simple("gelu", approximate=lambda a: _s(a.get("approximate", "none"))),
    "Add": _binary, "Sub": _binary, "Mul": _binary, "Div": _binary, "Concat": _concat, "Split": _split,
    "Slice": _slice, "Reshape": _reshape, "Flatten": _reshape, "Squeeze": _reshape, "Unsqueeze": _reshape,
    "Transpose": _transpose, "GlobalAveragePool": _global_pool, "AveragePool": _pool, "MaxPool": _pool,
    "ReduceMean": _reduce, "ReduceSum": _reduce, "Resize": _resize, "Dropout": _alias, "Identity": _alias,
    "Softmax": _softmax, "LogSoftmax": _softmax,
}


def lower(imp, node):
    """Lower one ONNX node (some input of which is a tensor of the batch)."""
    fn = OPS.get(node.op_type)
    if fn is None or node.domain not in ("", "ai.onnx"):
        raise UnsupportedLayerError(f"ONNX op '{node.op_type}' (node '{node.name or node.output[0]}') is not "
                                    f"supported by tinycl")
    if node.op_type not in ("Concat", "Add", "Sub", "Mul", "Div", "MatMul") and not imp.is_data(node.input[0]):
        raise imp.error(node, "reads a constant as its data input; tinycl needs a tensor of the batch")
    return fn(imp, node, _attrs(node))
