"""The module table: which torch modules are primitives (leaves of the trace) and their attributes."""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..kernels.macs import pair as _pair

_ALIAS = "alias"


def _one(v) -> int:
    return int(v) if isinstance(v, int) else int(v[0])


def _pw(m, path, err, *names):
    """Parameter roles -> qualified names, for those the module has (``bias=None`` is left out)."""
    return {k: f"{path}.{k}" for k in names if getattr(m, k, None) is not None}


def _conv(m, path, err):
    dims = 2 if isinstance(m, nn.Conv2d) else 1
    size = _pair if dims == 2 else (lambda v: (_one(v),))
    if m.padding_mode != "zeros":
        raise err(f"has padding_mode={m.padding_mode!r}; only 'zeros' is supported")
    if any(d != 1 for d in (m.dilation if isinstance(m.dilation, tuple) else (m.dilation,))):
        raise err(f"has dilation {m.dilation}; only dilation 1 is supported")
    k = size(m.kernel_size)
    pad = m.padding
    if isinstance(pad, str):
        if pad == "valid":
            pad = 0
        elif all(x % 2 == 1 for x in k):  # 'same' with odd kernels is symmetric
            pad = tuple(x // 2 for x in k)
        else:
            raise err(f"has padding='same' with an even kernel {k} (asymmetric padding)")
    attrs = dict(kernel=k, stride=size(m.stride), padding=size(pad), groups=m.groups,
                 in_channels=m.in_channels, out_channels=m.out_channels)
    return f"conv{dims}d", attrs, _pw(m, path, err, "weight", "bias"), {}


def _linear(m, path, err):
    return "linear", dict(in_features=m.in_features, out_features=m.out_features), \
        _pw(m, path, err, "weight", "bias"), {}


def _batchnorm(m, path, err):
    if not m.track_running_stats or m.momentum is None:
        raise err("needs track_running_stats=True and a numeric momentum")
    bufs = {k: f"{path}.{k}" for k in ("running_mean", "running_var", "num_batches_tracked")}
    return "batchnorm", dict(eps=m.eps, momentum=m.momentum, channels=m.num_features), \
        _pw(m, path, err, "weight", "bias"), bufs


def _layernorm(m, path, err):
    return "layernorm", dict(normalized_shape=tuple(m.normalized_shape), eps=m.eps), \
        _pw(m, path, err, "weight", "bias"), {}


def _pool(m, path, err):
    dims = 2 if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) else 1
    size = _pair if dims == 2 else (lambda v: (_one(v),))
    kind = "maxpool" if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)) else "avgpool"
    attrs = dict(kernel=size(m.kernel_size), stride=size(m.stride or m.kernel_size), padding=size(m.padding),
                 ceil_mode=bool(m.ceil_mode), dims=dims)
    if kind == "maxpool":
        if any(d != 1 for d in size(m.dilation)) or m.return_indices:
            raise err("needs dilation 1 and return_indices=False")
    else:
        if getattr(m, "divisor_override", None):
            raise err("has divisor_override; not supported")
        attrs["count_include_pad"] = bool(m.count_include_pad)
    return kind, attrs, {}, {}


def _adaptive(m, path, err):
    dims = 2 if isinstance(m, nn.AdaptiveAvgPool2d) else 1
    out = _pair(m.output_size) if dims == 2 else (_one(m.output_size),)
    if any(o is None for o in out):
        raise err("has output_size None; give every output size")
    return "adaptive_avgpool", dict(output_size=out, dims=dims), {}, {}


def _act(kind, **extra):
    def fn(m, path, err):
        return kind, {k: getattr(m, v) for k, v in extra.items()}, {}, {}
    return fn


def _hardtanh(m, path, err):
    return "hardtanh", dict(min=float(m.min_val), max=float(m.max_val)), {}, {}


def _flatten(m, path, err):
    return "reshape", {}, {}, {}


def _dropout(m, path, err):
    return "dropout", dict(p=float(m.p)), {}, {}


def _upsample(m, path, err):
    if m.mode not in ("nearest", "bilinear"):
        raise err(f"mode {m.mode!r}; supported: nearest, bilinear")
    return "upsample", dict(mode=m.mode, align_corners=bool(m.align_corners) if m.mode == "bilinear" else None), {}, {}


def _stochastic_depth(m, path, err):
    p = getattr(m, "p", getattr(m, "drop_prob", 0.0))
    return "stochastic_depth", dict(p=float(p), mode=getattr(m, "mode", "row")), {}, {}


def _identity(m, path, err):
    return _ALIAS, {}, {}, {}


MODULE_OPS: dict[type, Callable] = {
    nn.Conv1d: _conv, nn.Conv2d: _conv, nn.Linear: _linear, nn.BatchNorm1d: _batchnorm,
    nn.BatchNorm2d: _batchnorm, nn.LayerNorm: _layernorm,
    nn.ReLU: _act("relu"), nn.ReLU6: _act("relu6"), nn.LeakyReLU: _act("leaky_relu", slope="negative_slope"),
    nn.Hardswish: _act("hardswish"), nn.Hardsigmoid: _act("hardsigmoid"), nn.Sigmoid: _act("sigmoid"),
    nn.SiLU: _act("silu"), nn.Tanh: _act("tanh"), nn.GELU: _act("gelu", approximate="approximate"),
    nn.Hardtanh: _hardtanh, nn.MaxPool1d: _pool, nn.MaxPool2d: _pool, nn.AvgPool1d: _pool, nn.AvgPool2d: _pool,
    nn.AdaptiveAvgPool1d: _adaptive, nn.AdaptiveAvgPool2d: _adaptive, nn.Flatten: _flatten,
    nn.Unflatten: _flatten, nn.Dropout: _dropout, nn.Identity: _identity, nn.Upsample: _upsample,
}
# Modules known by class name (libraries tinycl does not import): drop-path / stochastic depth.
NAMED_OPS: dict[str, Callable] = {"StochasticDepth": _stochastic_depth, "DropPath": _stochastic_depth}
# Extra primitives registered by tinycl.models (e.g. RangeNorm2d): type -> op name.
CUSTOM: dict[type, str] = {}


def register_custom(module_type: type, op: str) -> None:
    """Make ``module_type`` a leaf of the trace, lowered to a node of kind ``op``."""
    CUSTOM[module_type] = op


def is_leaf(m: nn.Module) -> bool:
    """Modules tinycl runs as one primitive (exact types: a subclass with its own forward is traced)."""
    return type(m) in MODULE_OPS or type(m) in CUSTOM or type(m).__name__ in NAMED_OPS


def module_attrs(m: nn.Module, path: str, err) -> tuple[str, dict, dict, dict]:
    """(op, attrs, params, buffers) of a leaf module; ``err(why)`` builds the error to raise."""
    if type(m) in CUSTOM:
        params = {k: f"{path}.{k}" for k, _ in m.named_parameters(recurse=False)}
        buffers = {k: f"{path}.{k}" for k, _ in m.named_buffers(recurse=False)}
        return CUSTOM[type(m)], {"module": m}, params, buffers
    fn = MODULE_OPS.get(type(m)) or NAMED_OPS[type(m).__name__]
    return fn(m, path, err)
