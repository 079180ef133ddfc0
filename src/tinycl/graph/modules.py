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
    """Conv1d/2d and ConvTranspose1d/2d; a dilated or transposed conv is ``conv_general`` (ATen kernels)."""
    dims = 2 if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) else 1
    size = _pair if dims == 2 else (lambda v: (_one(v),))
    if m.padding_mode != "zeros":
        raise err(f"has padding_mode={m.padding_mode!r}; only 'zeros' is supported")
    k, dil = size(m.kernel_size), size(m.dilation)
    pad = m.padding
    if isinstance(pad, str):
        if pad == "valid":
            pad = 0
        elif all((d * (x - 1)) % 2 == 0 for x, d in zip(k, dil)):  # 'same' padding that is symmetric
            pad = tuple(d * (x - 1) // 2 for x, d in zip(k, dil))
        else:
            raise err(f"has padding='same' with kernel {k} and dilation {dil} (asymmetric padding)")
    transposed = isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d))
    attrs = dict(kernel=k, stride=size(m.stride), padding=size(pad), groups=m.groups,
                 in_channels=m.in_channels, out_channels=m.out_channels)
    if transposed or any(d != 1 for d in dil):
        attrs.update(dilation=dil, transposed=transposed, dims=dims,
                     output_padding=size(m.output_padding) if transposed else (0,) * dims)
        return "conv_general", attrs, _pw(m, path, err, "weight", "bias"), {}
    return f"conv{dims}d", attrs, _pw(m, path, err, "weight", "bias"), {}


def _groupnorm(m, path, err):
    return "groupnorm", dict(groups=m.num_groups, eps=m.eps, channels=m.num_channels), \
        _pw(m, path, err, "weight", "bias"), {}


def _softmax(m, path, err):
    if m.dim is None:
        raise err("has dim=None; give the dimension")
    return "softmax", dict(dim=int(m.dim), log=isinstance(m, nn.LogSoftmax)), {}, {}


def _prelu(m, path, err):
    return "prelu", dict(channels=m.num_parameters), {"weight": f"{path}.weight"}, {}


def _zeropad(m, path, err):
    if float(getattr(m, "value", 0.0)) != 0.0:
        raise err("pads with a non-zero value; only zero padding is supported")
    pad = tuple(int(p) for p in m.padding)
    if any(p < 0 for p in pad):
        raise err("has negative padding (cropping)")
    return "pad", dict(pad=pad), {}, {}


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
    nn.Conv1d: _conv, nn.Conv2d: _conv, nn.ConvTranspose1d: _conv, nn.ConvTranspose2d: _conv, nn.Linear: _linear,
    nn.GroupNorm: _groupnorm, nn.Softmax: _softmax, nn.LogSoftmax: _softmax, nn.PReLU: _prelu,
    nn.ELU: _act("elu", alpha="alpha"), nn.Softplus: _act("softplus", beta="beta", threshold="threshold"),
    nn.Mish: _act("mish"), nn.ZeroPad2d: _zeropad, nn.ConstantPad1d: _zeropad, nn.ConstantPad2d: _zeropad, nn.BatchNorm1d: _batchnorm,
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
