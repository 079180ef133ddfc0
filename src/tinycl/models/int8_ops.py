"""The quantized ops of an INT8 front, one per (fused) graph node.

Each op has ``ffwd(xs)`` (float forward on the folded network, for calibration: it records the
output range), ``build(in_qps) -> out_qp`` (fixes the integer parameters from the input
quantization) and ``ifwd(qs)`` (integer forward on INT8 codes), and ``nbytes()`` on the device.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F

from tinycl.kernels import int8 as K
from tinycl.kernels import int8_elementwise as E
from tinycl.numerics import quant as Q


class Track:
    """Running min/max of a float tensor over the calibration batches."""

    def __init__(self):
        self.lo, self.hi = float("inf"), float("-inf")

    def see(self, x: torch.Tensor) -> None:
        if x.numel():
            self.lo = min(self.lo, float(x.min()))
            self.hi = max(self.hi, float(x.max()))

    def qparams(self) -> tuple[float, int]:
        return Q.choose_act_qparams(self.lo, self.hi)


def act_float(x: torch.Tensor, act: str | None) -> torch.Tensor:
    return x.clamp(min=0) if act == "relu" else x.clamp(0, 6) if act == "relu6" else x


def act_bounds(act: str | None, scale: float, zp: int) -> tuple[int, int]:
    """Code range of an output with a fused ReLU / ReLU6 clamp."""
    if act is None:
        return Q.INT8_MIN, Q.INT8_MAX
    hi = Q.INT8_MAX if act == "relu" else int(K.relu6_int(torch.tensor([Q.INT8_MAX]), zp, scale).item())
    return zp, hi


class QOp:
    """Base: ``name`` of the node, ``inputs`` names, the output track (None: keeps the input's qparams)."""

    fusable = False   # a following ReLU / ReLU6 can become its output clamp

    def __init__(self, name: str, inputs: list[str]):
        self.name, self.inputs, self.act = name, list(inputs), None
        self.track = Track()

    def nbytes(self) -> int:
        return 0


class Weighted(QOp):
    """Conv2d or Linear with folded float64 weight / bias and an optional fused activation."""

    fusable = True

    def __init__(self, name, inputs, kind: str, w: torch.Tensor, b: torch.Tensor, **conv):
        super().__init__(name, inputs)
        self.kind, self.w, self.b, self.conv = kind, w, b, conv
        self.folded = False

    def ffwd(self, xs):
        x = xs[0]
        w, b = self.w.to(x.dtype), self.b.to(x.dtype)
        if self.kind == "conv":
            y = F.conv2d(x, w, b, **self.conv)
        else:
            y = F.linear(x.reshape(-1, x.shape[-1]), w, b).reshape(*x.shape[:-1], -1)
        y = act_float(y, self.act)
        self.track.see(y)
        return y

    def build(self, qps):
        s_in, self.in_zp = qps[0]
        self.wq, s_w = Q.quantize_weight_per_channel(self.w)
        self.bq = Q.quantize_bias(self.b, s_in, s_w)
        s_out, self.out_zp = self.track.qparams()
        self.mult, self.shift = Q.quantize_multipliers(s_in * s_w / s_out)
        self.qmin, self.qmax = act_bounds(self.act, s_out, self.out_zp)
        return s_out, self.out_zp

    def ifwd(self, qs):
        q = qs[0]
        args = (self.in_zp, self.wq, self.bq, self.mult, self.shift, self.out_zp, self.qmin, self.qmax)
        if self.kind == "conv":
            return K.conv2d_int8(q, *args, **self.conv)
        return K.linear_int8(q.reshape(-1, q.shape[-1]), *args).reshape(*q.shape[:-1], -1)

    def nbytes(self):
        # int8 weights, int32 bias, per channel int32 multiplier + int8 shift, int8 output zero point
        return self.wq.numel() + self.wq.shape[0] * (4 + 4 + 1) + 1


class Add(QOp):
    """``a + b`` with TFLite's fixed-point rescaling (and a fused ReLU / ReLU6)."""

    fusable = True

    def ffwd(self, xs):
        y = act_float(xs[0] + xs[1], self.act)
        self.track.see(y)
        return y

    def build(self, qps):
        (sa, self.a_zp), (sb, self.b_zp) = qps
        s_out, self.out_zp = self.track.qparams()
        self.params = Q.add_params(sa, sb, s_out)
        self.qmin, self.qmax = act_bounds(self.act, s_out, self.out_zp)
        return s_out, self.out_zp

    def ifwd(self, qs):
        return K.add_int8(qs[0], self.a_zp, qs[1], self.b_zp, self.params, self.out_zp, self.qmin, self.qmax)

    def nbytes(self):
        return 3 * (4 + 1) + 1   # three int32 multipliers + three int8 shifts + int8 output zero point


class Mul(QOp):
    """``a * b`` of two tensors (broadcasting): one fixed-point multiplier."""

    def ffwd(self, xs):
        y = xs[0] * xs[1]
        self.track.see(y)
        return y

    def build(self, qps):
        (sa, self.a_zp), (sb, self.b_zp) = qps
        s_out, self.out_zp = self.track.qparams()
        self.mult, self.shift = Q.quantize_multiplier(sa * sb / s_out)
        return s_out, self.out_zp

    def ifwd(self, qs):
        return E.mul_int8(qs[0], self.a_zp, qs[1], self.b_zp, self.mult, self.shift, self.out_zp)

    def nbytes(self):
        return 4 + 1 + 1


class Cat(QOp):
    """Concatenation: every input rescaled to the output's quantization."""

    def __init__(self, name, inputs, dim):
        super().__init__(name, inputs)
        self.dim = dim

    def ffwd(self, xs):
        y = torch.cat(xs, self.dim)
        self.track.see(y)
        return y

    def build(self, qps):
        s_out, self.out_zp = self.track.qparams()
        self.rescale = [None if (s, z) == (s_out, self.out_zp) else (z, *Q.quantize_multiplier(s / s_out))
                        for s, z in qps]
        return s_out, self.out_zp

    def ifwd(self, qs):
        parts = [q if r is None else E.rescale_int8(q, r[0], r[1], r[2], self.out_zp) for q, r in zip(qs, self.rescale)]
        return torch.cat(parts, self.dim)

    def nbytes(self):
        return sum(5 for r in self.rescale if r is not None) + 1


class Lut(QOp):
    """Any elementwise function of one tensor, as a 256-entry table of output codes."""

    def __init__(self, name, inputs, fn):
        super().__init__(name, inputs)
        self.fn = fn

    def ffwd(self, xs):
        y = self.fn(xs[0])
        self.track.see(y)
        return y

    def build(self, qps):
        s_in, z_in = qps[0]
        s_out, z_out = self.track.qparams()
        self.table = E.make_lut(self.fn, s_in, z_in, s_out, z_out)
        return s_out, z_out

    def ifwd(self, qs):
        return E.lut_int8(qs[0], self.table)

    def nbytes(self):
        return 256


class Keep(QOp):
    """Ops that keep the input's scale and zero point: pools, views, ReLU / ReLU6 on codes, split."""

    def __init__(self, name, inputs, kind, **kw):
        super().__init__(name, inputs)
        self.kind, self.kw = kind, kw

    def ffwd(self, xs):
        x, k, kw = xs[0], self.kind, self.kw
        if k in ("maxpool", "avgpool"):
            fn = F.max_pool2d if k == "maxpool" else partial(F.avg_pool2d, count_include_pad=kw["count_include_pad"])
            return fn(x, kw["kernel"], kw["stride"], kw["padding"], ceil_mode=kw.get("ceil_mode", False))
        if k == "gap":
            return x.mean(dim=(2, 3), keepdim=True)
        return self._route(x) if k in ("view", "permute", "slice", "split", "getitem") else act_float(x, k)

    def _route(self, x):
        k, kw = self.kind, self.kw
        if k == "view":
            return x.reshape(x.shape[0], *kw["shape"])
        if k == "permute":
            return x.permute(kw["dims"])
        if k == "slice":
            return x[kw["index"]]
        if k == "split":
            parts = torch.split(x, list(kw["sizes"]), kw["dim"])
            return tuple(p.squeeze(kw["dim"]) for p in parts) if kw["squeeze"] else parts
        return x[kw["index"]]   # getitem of a split

    def build(self, qps):
        self.scale, self.zp = qps[0]
        return qps[0]

    def ifwd(self, qs):
        q, k, kw = qs[0], self.kind, self.kw
        if k == "maxpool":
            return K.maxpool2d_int8(q, kw["kernel"], kw["stride"], kw["padding"])
        if k == "avgpool":
            return K.avgpool2d_int8(q, self.zp, kw["kernel"], kw["stride"], kw["padding"], kw["count_include_pad"])
        if k == "gap":
            return K.global_avgpool_int8(q, self.zp)
        if k == "relu":
            return K.relu_int(q, self.zp)
        if k == "relu6":
            return K.relu6_int(q, self.zp, self.scale)
        return self._route(q)


def lut_function(op: str, attrs: dict):
    """The float64 function of an elementwise op that an INT8 front runs as a table (None if none)."""
    s = attrs.get("scalar")
    fns = {"hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid, "sigmoid": torch.sigmoid, "silu": F.silu,
           "tanh": torch.tanh, "gelu": partial(F.gelu, approximate=attrs.get("approximate", "none")),
           "leaky_relu": partial(F.leaky_relu, negative_slope=attrs.get("slope", 0.01)),
           "clamp": lambda x: x.clamp(attrs.get("min"), attrs.get("max")),
           "elu": partial(F.elu, alpha=attrs.get("alpha", 1.0)), "mish": F.mish,
           "softplus": partial(F.softplus, beta=attrs.get("beta", 1.0), threshold=attrs.get("threshold", 20.0)),
           "hardtanh": lambda x: x.clamp(attrs.get("min"), attrs.get("max"))}
    if op in fns:
        return fns[op]
    if s is None or not math.isfinite(s):
        return None
    rev = attrs.get("reverse", False)
    return {"add": lambda x: x + s, "sub": (lambda x: s - x) if rev else (lambda x: x - s),
            "mul": lambda x: x * s, "div": (lambda x: s / x) if rev else (lambda x: x / s)}.get(op)
