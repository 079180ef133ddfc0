"""Lowering of functional calls and tensor methods (``x + y``, ``torch.cat``, ``x.mean((2, 3))``...).

``lower_function(low, n, op)`` returns ``(op, tensor inputs, attrs)``. Dimensions in attrs count
the batch dimension (dim 0), which no op may touch.
"""

from __future__ import annotations

import torch
import torch.fx as fx

_ALIAS = "alias"


def _args(low, n: fx.Node, names: list[str], defaults: dict) -> dict:
    """Positional and keyword arguments by name, non-tensors resolved to constants."""
    out = dict(defaults)
    for k, a in zip(names, n.args):
        out[k] = a
    out.update(n.kwargs)
    return {k: (v if isinstance(v, fx.Node) and low._is_tensor(v) else low.const(v, n)) for k, v in out.items()}


def _dims(low, n, dims, rank, x=None) -> tuple[int, ...]:
    """``dims`` made non-negative; refuses the dimension that holds the batch of input ``x``."""
    if low.batchless(n):
        return tuple(range(rank)) if dims is None else tuple(d % rank for d in ((dims,) if isinstance(dims, int) else dims))
    if dims is None:
        raise low.error(n, "reduces over every dimension including the batch")
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    dims = tuple(d % rank for d in dims)
    lay = low.layout_of(x) if x is not None else None
    bd = 0 if lay in (None, "none") else lay[0]
    if bd in dims and lay != "none":
        raise low.error(n, f"works across the batch dimension (dim {bd})")
    return dims


def _elementwise(low, n, op):
    if op == "neg":
        return "mul", [n.args[0]], {"scalar": -1.0}
    a, b = n.args[0], n.args[1] if len(n.args) > 1 else n.kwargs.get("other")
    alpha = low.const(n.kwargs.get("alpha", 1), n)
    if op == "rsub":
        a, b, op = b, a, "sub"
    ta, tb = low._is_tensor(a), low._is_tensor(b)
    if alpha != 1:
        raise low.error(n, "uses alpha != 1; write it as a multiply")
    if ta and tb:
        return op, [a, b], {}
    if ta or tb:
        s = low.const(b if ta else a, n)
        if not isinstance(s, (int, float)):
            raise low.error(n, "has a non-scalar constant operand")
        return op, [a if ta else b], {"scalar": float(s), "reverse": not ta}
    raise low.error(n, "has no tensor operand")


def _activation(low, n, op):
    x = n.args[0]
    if op == "leaky_relu":
        a = _args(low, n, ["x", "negative_slope"], {"negative_slope": 0.01})
        return op, [x], {"slope": float(a["negative_slope"])}
    if op == "gelu":
        return op, [x], {"approximate": low.const(n.kwargs.get("approximate", "none"), n)}
    if op in ("hardtanh", "clamp"):
        lo_k, hi_k = ("min_val", "max_val") if op == "hardtanh" else ("min", "max")
        d = {lo_k: -1.0, hi_k: 1.0} if op == "hardtanh" else {lo_k: None, hi_k: None}
        a = _args(low, n, ["x", lo_k, hi_k], d)
        lo, hi = a[lo_k], a[hi_k]
        if any(isinstance(v, fx.Node) for v in (lo, hi)):
            raise low.error(n, "clamps to tensor bounds")
        if op == "hardtanh" and (lo, hi) == (0.0, 6.0):
            return "relu6", [x], {}
        return op, [x], {"min": None if lo is None else float(lo), "max": None if hi is None else float(hi)}
    return op, [x], {}


def _shape(low, n, op):
    x = n.args[0]
    if op == "reshape":
        return "reshape", [x], {}
    if op == "permute":
        full = low.p2[n]
        rank = low.p2[x].dim()
        if n.target in ("t",):
            dims = (1, 0)
        elif "transpose" in str(n.target):
            a = _args(low, n, ["x", "dim0", "dim1"], {})
            dims = list(range(rank))
            i, j = a["dim0"] % rank, a["dim1"] % rank
            dims[i], dims[j] = dims[j], dims[i]
        else:
            rest = n.args[1:] if len(n.args) > 2 or not isinstance(n.args[1], (list, tuple)) else n.args[1]
            dims = [d % rank for d in low.const(list(rest) if not isinstance(rest, list) else rest, n)]
        del full   # where the batch goes is read from the probes (lower.check_layout)
        return "permute", [x], {"dims": tuple(dims)}
    if op == "detach":
        return "detach", [x], {}
    raise low.error(n, "is not supported by tinycl")


def _cat(low, n):
    a = _args(low, n, ["tensors", "dim"], {"dim": 0})
    xs = list(n.args[0] if n.args else n.kwargs["tensors"])
    if not all(low._is_tensor(t) for t in xs):
        raise low.error(n, "concatenates a non-tensor")
    rank = low.p2[xs[0]].dim()
    return "cat", xs, {"dim": _dims(low, n, a["dim"], rank, xs[0])[0]}


def _split(low, n):
    x = n.args[0]
    rank = low.p2[x].dim()
    if "unbind" in str(n.target):
        dim = low.const(n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0), n)
    else:
        dim = low.const(n.args[2] if len(n.args) > 2 else n.kwargs.get("dim", 0), n)
    dim = _dims(low, n, dim, rank, x)[0]
    squeeze = "unbind" in str(n.target)
    sizes = [1 if squeeze else t.shape[dim] for t in low.p2[n]]   # unbind's parts lose the dim
    return "split", [x], {"dim": dim, "sizes": tuple(sizes), "squeeze": squeeze}


def _reduce(low, n, op):
    x = n.args[0]
    a = _args(low, n, ["x", "dim", "keepdim"], {"dim": None, "keepdim": False})
    if n.kwargs.get("dtype") is not None:
        raise low.error(n, "changes the dtype")
    return op, [x], {"dims": _dims(low, n, a["dim"], low.p2[x].dim(), x), "keepdim": bool(a["keepdim"])}


def _aten_index(low, n):
    """``aten.select.int(x, dim, i)`` / ``aten.slice.Tensor(x, dim, start, end, step)`` (torch.export)
    as the index tuple of ``x[...]``."""
    name = n.target._opname
    a = _args(low, n, ["x", "dim", "start", "end", "step"] if name == "slice" else ["x", "dim", "index"],
              {"dim": 0, "start": None, "end": None, "step": 1})
    dim = a["dim"] % low.p2[n.args[0]].dim()
    last = a["index"] if name == "select" else slice(a["start"], a["end"], a["step"])
    return (slice(None),) * dim + (last,)


def _take(low, n, x, idx):
    """``x[:, index]`` with one integer buffer as the index and full slices elsewhere (``take``)."""
    at = [p for p, i in enumerate(idx) if isinstance(i, fx.Node)]
    ok = len(at) == 1 and all(i == slice(None) for p, i in enumerate(idx) if p != at[0])
    t = idx[at[0]] if ok else None
    if not ok or not low.batchless(t) or low.p2[t].is_floating_point() or low.p2[t].dtype == torch.bool:
        raise low.error(n, "indexes with a tensor or list (advanced indexing); supported: one integer "
                           "buffer along one dimension, full slices elsewhere")
    lay = low.layout_of(x)
    if lay != "none" and at[0] == (0 if lay is None else lay[0]):
        raise low.error(n, "indexes the batch dimension with a tensor")
    return "take", [x, t], {"dim": at[0]}


def _getitem(low, n):
    if isinstance(n.target, torch._ops.OpOverload) and n.target._opname in ("select", "slice"):
        return "slice", [n.args[0]], {"index": _aten_index(low, n)}
    if isinstance(n.target, torch._ops.OpOverload) and n.target._opname == "index":   # aten.index.Tensor
        return _take(low, n, n.args[0], tuple(slice(None) if i is None else i for i in n.args[1]))
    x, idx = n.args
    if isinstance(low.p2[x], (tuple, list)):
        return "getitem", [x], {"index": low.const(idx, n)}
    idx = low.const(idx, n)
    idx = idx if isinstance(idx, tuple) else (idx,)
    if any(isinstance(i, (torch.Tensor, list)) or isinstance(i, fx.Node) for i in idx):
        return _take(low, n, x, idx)
    return "slice", [x], {"index": idx}


def _pool(low, n, op):
    x = n.args[0]
    dims = low.p2[x].dim() - 2
    pair = (lambda v: (int(v),) * dims if isinstance(v, int) else tuple(int(t) for t in v))
    if op == "adaptive_avgpool":
        a = _args(low, n, ["x", "output_size"], {})
        return op, [x], {"output_size": pair(a["output_size"]), "dims": dims}
    names = ["x", "kernel_size", "stride", "padding"]
    d = {"stride": None, "padding": 0, "ceil_mode": False}
    if op == "avgpool":
        names += ["ceil_mode", "count_include_pad", "divisor_override"]
        d.update(count_include_pad=True, divisor_override=None)
    else:
        names += ["dilation", "ceil_mode", "return_indices"]
        d.update(dilation=1, return_indices=False)
    a = _args(low, n, names, d)
    k = pair(a["kernel_size"])
    attrs = dict(kernel=k, stride=pair(a["stride"] or k), padding=pair(a["padding"]),
                 ceil_mode=bool(a["ceil_mode"]), dims=dims)
    if op == "avgpool":
        if a["divisor_override"]:
            raise low.error(n, "has divisor_override; not supported")
        attrs["count_include_pad"] = bool(a["count_include_pad"])
    elif pair(a["dilation"]) != (1,) * dims or a["return_indices"]:
        raise low.error(n, "needs dilation 1 and return_indices=False")
    return op, [x], attrs


def _dropout_like(low, n, op):
    x = n.args[0]
    if op == "dropout":
        a = _args(low, n, ["x", "p", "training", "inplace"], {"p": 0.5, "training": True, "inplace": False})
        return "dropout", [x], {"p": float(a["p"]) if a["training"] else 0.0}
    a = _args(low, n, ["x", "p", "mode", "training"], {"training": True})
    return "stochastic_depth", [x], {"p": float(a["p"]) if a["training"] else 0.0, "mode": a["mode"]}


def _upsample(low, n):
    if isinstance(n.target, torch._ops.OpOverload):   # torch.export: aten.upsample_{nearest,bilinear}2d.vec
        bilinear = "bilinear" in n.target._opname
        corners = low.const(n.args[2], n) if bilinear else None
        return "upsample", [n.args[0]], {"mode": "bilinear" if bilinear else "nearest",
                                         "align_corners": bool(corners) if bilinear else None}
    a = _args(low, n, ["x", "size", "scale_factor", "mode", "align_corners"],
              {"size": None, "scale_factor": None, "mode": "nearest", "align_corners": None})
    if a["mode"] not in ("nearest", "bilinear"):
        raise low.error(n, f"mode {a['mode']!r}; supported: nearest, bilinear")
    return "upsample", [n.args[0]], {"mode": a["mode"], "align_corners": a["align_corners"]}


def _weighted(low, n, op):
    """``F.linear(x, w, b)`` and ``F.conv2d(x, w, b, stride, padding, dilation, groups)`` on parameters."""
    names = ["x", "weight", "bias"] + (["stride", "padding", "dilation", "groups"] if op == "conv2d" else [])
    a = _args(low, n, names, {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1})
    if op == "linear" and any(a[r] is not None and low.param_of(a[r]) is None and low.batchless(a[r])
                              for r in ("weight", "bias")):
        from .attention import lower_linear_computed
        return lower_linear_computed(low, n, a)
    params = {}
    for role in ("weight", "bias"):
        v = a[role]
        if v is None:
            continue
        name = low.param_of(v)
        if name is None:
            raise low.error(n, f"uses a computed {role} (only module parameters are supported)")
        params[role] = name
    w = low.params[params["weight"]]
    if op == "linear":
        return op, [a["x"]], {"in_features": w.shape[1], "out_features": w.shape[0]}, params
    pair = (lambda v: (int(v), int(v)) if isinstance(v, int) else tuple(int(t) for t in v))
    k = tuple(w.shape[2:])
    pad = a["padding"]
    if isinstance(pad, str):
        if pad != "valid" and not all(x % 2 == 1 for x in k):
            raise low.error(n, f"has padding='same' with an even kernel {k}")
        pad = 0 if pad == "valid" else tuple(x // 2 for x in k)
    if pair(a["dilation"]) != (1, 1):
        raise low.error(n, f"has dilation {a['dilation']}; only dilation 1 is supported")
    attrs = dict(kernel=k, stride=pair(a["stride"]), padding=pair(pad), groups=int(a["groups"]),
                 in_channels=w.shape[1] * int(a["groups"]), out_channels=w.shape[0])
    return op, [a["x"]], attrs, params


def _bound(low, n, a: dict, roles, kind: str) -> dict:
    """Role -> parameter (or buffer) name of the get_attr arguments named in ``roles``."""
    out = {}
    for role in roles:
        v = a.get(role)
        if v is None:
            continue
        name = low.param_of(v) if kind == "param" else low.buffer_of(v)
        if name is None:
            raise low.error(n, f"uses a computed {role} (only module {kind}s are supported)")
        out[role] = name
    return out


def _norm(low, n, op):
    """``F.batch_norm`` (timm's BatchNormAct2d) and ``F.layer_norm`` on module parameters."""
    if op == "batchnorm":
        aten = isinstance(n.target, torch._ops.OpOverload)   # aten.batch_norm takes weight, bias first
        names = (["x", "weight", "bias", "running_mean", "running_var", "training", "momentum", "eps"] if aten
                 else ["x", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"])
        a = _args(low, n, names, {"weight": None, "bias": None, "training": False, "momentum": 0.1, "eps": 1e-5})
        if a["momentum"] is None or a["running_mean"] is None:
            raise low.error(n, "needs running statistics and a numeric momentum")
        bufs = _bound(low, n, a, ("running_mean", "running_var"), "buffer")
        prefix = bufs["running_mean"].rpartition(".")[0]   # "" when the batch norm is the root module
        tracked = f"{prefix}.num_batches_tracked" if prefix else "num_batches_tracked"
        if tracked in low.buffers:
            bufs["num_batches_tracked"] = tracked
        if not a["training"] and low.module.training:
            raise low.error(n, "runs with training=False inside a model in training mode; tinycl reads a "
                               "batch norm's mode from its module")
        attrs = dict(eps=float(a["eps"]), momentum=float(a["momentum"]), channels=low.p2[a["x"]].shape[1])
        return op, [a["x"]], attrs, _bound(low, n, a, ("weight", "bias"), "param"), bufs
    a = _args(low, n, ["x", "normalized_shape", "weight", "bias", "eps"], {"weight": None, "bias": None, "eps": 1e-5})
    attrs = dict(normalized_shape=tuple(a["normalized_shape"]), eps=float(a["eps"]))
    return op, [a["x"]], attrs, _bound(low, n, a, ("weight", "bias"), "param"), {}


def _more(low, n, op):
    """group_norm, softmax / log_softmax, pad, elu, softplus, mish, prelu (functional forms)."""
    from .lower import target_name
    x = n.args[0]
    if op == "groupnorm":
        a = _args(low, n, ["x", "num_groups", "weight", "bias", "eps"], {"weight": None, "bias": None, "eps": 1e-5})
        attrs = dict(groups=int(a["num_groups"]), eps=float(a["eps"]), channels=low.p2[x].shape[1])
        return op, [x], attrs, _bound(low, n, a, ("weight", "bias"), "param"), {}
    if op == "softmax":
        a = _args(low, n, ["x", "dim", "_stacklevel", "dtype"], {"dim": None, "dtype": None})
        if a["dim"] is None or a["dtype"] is not None:
            raise low.error(n, "needs an explicit dim and no dtype")
        return op, [x], {"dim": _dims(low, n, a["dim"], low.p2[x].dim(), x)[0], "log": "log" in target_name(n)}, {}, {}
    if op == "pad":
        a = _args(low, n, ["x", "pad", "mode", "value"], {"mode": "constant", "value": None})
        if a["mode"] != "constant" or a["value"] not in (None, 0, 0.0) or any(p < 0 for p in a["pad"]):
            raise low.error(n, "is supported with mode='constant', value 0 and non-negative pads only")
        if len(a["pad"]) // 2 >= low.p2[x].dim():
            raise low.error(n, "pads the batch dimension")
        return op, [x], {"pad": tuple(int(p) for p in a["pad"])}, {}, {}
    if op == "prelu":
        a = _args(low, n, ["x", "weight"], {})
        params = _bound(low, n, a, ("weight",), "param")
        return op, [x], {"channels": low.params[params["weight"]].numel()}, params, {}
    names = {"elu": (["x", "alpha"], {"alpha": 1.0}), "softplus": (["x", "beta", "threshold"],
             {"beta": 1.0, "threshold": 20.0}), "mish": (["x"], {})}[op]
    a = _args(low, n, *names)
    if a.pop("inplace", False) not in (False, True):
        raise low.error(n, "has an unexpected argument")
    return op, [x], {k: float(v) for k, v in a.items() if k != "x"}, {}, {}


def lower_function(low, n: fx.Node, op: str):
    """(op, tensor inputs, attrs, params, buffers) of a call_function / call_method node."""
    if op in ("groupnorm", "softmax", "pad", "elu", "softplus", "mish", "prelu"):
        return _more(low, n, op)
    if op in ("matmul", "sdpa", "expand"):
        from .attention import lower_expand, lower_matmul, lower_sdpa
        return {"matmul": lower_matmul, "sdpa": lower_sdpa, "expand": lower_expand}[op](low, n)
    if op in ("linear", "conv2d"):
        return (*_weighted(low, n, op), {})
    if op in ("batchnorm", "layernorm"):
        return _norm(low, n, op)
    return (*_lower(low, n, op), {}, {})


def _lower(low, n: fx.Node, op: str):
    if op == _ALIAS:
        return op, [n.args[0]], {}
    if op in ("add", "sub", "rsub", "mul", "div", "neg"):
        return _elementwise(low, n, op)
    if op in ("relu", "relu6", "leaky_relu", "hardswish", "hardsigmoid", "sigmoid", "silu", "tanh", "gelu",
              "hardtanh", "clamp"):
        return _activation(low, n, op)
    if op == "cat":
        return _cat(low, n)
    if op == "split":
        return _split(low, n)
    if op in ("mean", "sum"):
        return _reduce(low, n, op)
    if op == "getitem":
        return _getitem(low, n)
    if op in ("avgpool", "maxpool", "adaptive_avgpool"):
        return _pool(low, n, op)
    if op in ("dropout", "stochastic_depth"):
        return _dropout_like(low, n, op)
    if op == "upsample":
        return _upsample(low, n)
    return _shape(low, n, op)
