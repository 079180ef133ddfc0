"""Post-training INT8 quantization of a frozen torch "front" (the layers before the latent).

``quantize_front(front, calib)`` turns an ``nn.Sequential`` of Conv2d / BatchNorm2d /
ReLU / ReLU6 / MaxPool2d / AvgPool2d / AdaptiveAvgPool2d(1) / Flatten / Dropout /
Identity / Linear, nested Sequentials and :class:`tinycl.models.blocks.Residual`, into
a :class:`QuantizedFront` that runs with integer semantics only
(:mod:`tinycl.kernels.int8`, :mod:`tinycl.numerics.quant`):

- Eval semantics: the front is never modified; BatchNorm is folded from its *running*
  statistics (as in ``eval()``) into the Conv2d right before it (nested Sequentials
  are flattened first, Dropout/Identity dropped), even if the module is in train mode.
- A ReLU/ReLU6 right after a Conv2d/Linear/Residual is fused into its requantization
  clamp; other ReLUs are clamps on codes.
- Weights INT8 symmetric per output channel, biases INT32, activations INT8 per
  tensor (signed, zero point) with ranges = min/max over the calibration batch, taken
  on the float (folded) network. Requantization uses integer (multiplier, shift).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tinycl.errors import TinyclError, UnsupportedLayerError
from tinycl.kernels import int8 as K
from tinycl.models.blocks import Residual
from tinycl.numerics import quant as Q

SUPPORTED = ("Conv2d, BatchNorm2d (after Conv2d), ReLU, ReLU6, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1), "
             "Flatten, Dropout, Identity, Linear, Sequential, Residual")


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Folded (weight, bias) in float64 of ``bn(conv(x))`` with BN's running statistics."""
    w = conv.weight.detach().to(torch.float64)
    b = conv.bias.detach().to(torch.float64) if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    inv = 1.0 / torch.sqrt(bn.running_var.detach().to(torch.float64) + bn.eps)
    gamma = bn.weight.detach().to(torch.float64) if bn.weight is not None else torch.ones_like(inv)
    beta = bn.bias.detach().to(torch.float64) if bn.bias is not None else torch.zeros_like(inv)
    k = gamma * inv
    return w * k.reshape(-1, 1, 1, 1), (b - bn.running_mean.detach().to(torch.float64)) * k + beta


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _unsupported(path: str, m: nn.Module, why: str = "") -> UnsupportedLayerError:
    extra = f" ({why})" if why else ""
    return UnsupportedLayerError(f"INT8 front: unsupported layer '{path or '<root>'}' of type "
                                 f"{type(m).__name__}{extra}; supported: {SUPPORTED}")


class _Track:
    """Running min/max of a float tensor over the calibration batches."""

    def __init__(self):
        self.lo, self.hi = float("inf"), float("-inf")

    def see(self, x: torch.Tensor) -> None:
        if x.numel():
            self.lo = min(self.lo, float(x.min()))
            self.hi = max(self.hi, float(x.max()))

    def qparams(self) -> tuple[float, int]:
        return Q.choose_act_qparams(self.lo, self.hi)


def _act_float(x: torch.Tensor, act: str | None) -> torch.Tensor:
    return x.clamp(min=0) if act == "relu" else x.clamp(0, 6) if act == "relu6" else x


def _act_bounds(act: str | None, scale: float, zp: int) -> tuple[int, int]:
    if act is None:
        return Q.INT8_MIN, Q.INT8_MAX
    hi = Q.INT8_MAX if act == "relu" else int(K.relu6_int(torch.tensor([Q.INT8_MAX]), zp, scale).item())
    return zp, hi


# ----------------------------------------------------------------------------- ops
# Each op: ffwd(x float) for calibration, build(in_qp) -> out_qp, ifwd(q codes), nbytes().

class _Weighted:
    """Conv2d or Linear with folded float64 weight/bias and an optional fused activation."""

    def __init__(self, path: str, kind: str, w: torch.Tensor, b: torch.Tensor, act: str | None = None, **conv):
        self.path, self.kind, self.w, self.b, self.act, self.conv = path, kind, w, b, act, conv
        self.track = _Track()

    def ffwd(self, x):
        w, b = self.w.to(x.dtype), self.b.to(x.dtype)
        y = F.conv2d(x, w, b, **self.conv) if self.kind == "conv" else F.linear(x, w, b)
        y = _act_float(y, self.act)
        self.track.see(y)
        return y

    def build(self, in_qp):
        s_in, self.in_zp = in_qp
        self.wq, s_w = Q.quantize_weight_per_channel(self.w)
        self.bq = Q.quantize_bias(self.b, s_in, s_w)
        s_out, self.out_zp = self.track.qparams()
        self.mult, self.shift = Q.quantize_multipliers(s_in * s_w / s_out)
        self.qmin, self.qmax = _act_bounds(self.act, s_out, self.out_zp)
        return s_out, self.out_zp

    def ifwd(self, q):
        args = (q, self.in_zp, self.wq, self.bq, self.mult, self.shift, self.out_zp, self.qmin, self.qmax)
        return K.conv2d_int8(*args, **self.conv) if self.kind == "conv" else K.linear_int8(*args)

    def nbytes(self):
        # int8 weights, int32 bias, per channel int32 multiplier + int8 shift, int8 output zero point
        return self.wq.numel() + self.wq.shape[0] * (4 + 4 + 1) + 1


class _Plain:
    """Ops that keep the input's scale and zero point: pools, flatten, standalone ReLU/ReLU6."""

    def __init__(self, kind: str, **kw):
        self.kind, self.kw = kind, kw

    def ffwd(self, x):
        k, kw = self.kind, self.kw
        if k == "maxpool":
            return F.max_pool2d(x, **kw)
        if k == "avgpool":
            return F.avg_pool2d(x, **kw)
        if k == "gap":
            return x.mean(dim=(2, 3), keepdim=True)
        if k == "flatten":
            return x.flatten(1)
        return _act_float(x, k)

    def build(self, in_qp):
        self.scale, self.zp = in_qp
        return in_qp

    def ifwd(self, q):
        k, kw = self.kind, self.kw
        if k == "maxpool":
            return K.maxpool2d_int8(q, **kw)
        if k == "avgpool":
            return K.avgpool2d_int8(q, self.zp, **kw)
        if k == "gap":
            return K.global_avgpool_int8(q, self.zp)
        if k == "flatten":
            return q.flatten(1)
        if k == "relu":
            return K.relu_int(q, self.zp)
        return K.relu6_int(q, self.zp, self.scale)

    def nbytes(self):
        return 0


class _Res:
    """``post(body(x) + shortcut(x))`` with a quantized add (fused ReLU/ReLU6 if post starts with one)."""

    def __init__(self, body, shortcut, act, post):
        self.body, self.shortcut, self.act, self.post = body, shortcut, act, post
        self.track = _Track()

    def ffwd(self, x):
        y = _act_float(_run_float(self.body, x) + _run_float(self.shortcut, x), self.act)
        self.track.see(y)
        return _run_float(self.post, y)

    def build(self, in_qp):
        a_qp, b_qp = _build(self.body, in_qp), _build(self.shortcut, in_qp)
        (self.a_zp, self.b_zp) = a_qp[1], b_qp[1]
        s_out, self.out_zp = self.track.qparams()
        self.params = Q.add_params(a_qp[0], b_qp[0], s_out)
        self.qmin, self.qmax = _act_bounds(self.act, s_out, self.out_zp)
        return _build(self.post, (s_out, self.out_zp))

    def ifwd(self, q):
        a, b = _run_int(self.body, q), _run_int(self.shortcut, q)
        y = K.add_int8(a, self.a_zp, b, self.b_zp, self.params, self.out_zp, self.qmin, self.qmax)
        return _run_int(self.post, y)

    def nbytes(self):
        # three int32 multipliers + three int8 shifts + int8 output zero point
        return sum(op.nbytes() for op in self.body + self.shortcut + self.post) + 3 * (4 + 1) + 1


def _run_float(ops, x):
    for op in ops:
        x = op.ffwd(x)
    return x


def _run_int(ops, q):
    for op in ops:
        q = op.ifwd(q)
    return q


def _build(ops, qp):
    for op in ops:
        qp = op.build(qp)
    return qp


# ----------------------------------------------------------------------------- parsing

def _leaves(m: nn.Module, path: str) -> list[tuple[str, nn.Module]]:
    """Flatten nested Sequentials; drop Dropout/Identity (identity in eval)."""
    if isinstance(m, nn.Sequential):
        out = []
        for name, child in m.named_children():
            out += _leaves(child, f"{path}.{name}" if path else name)
        return out
    if isinstance(m, (nn.Dropout, nn.Identity)):
        return []
    return [(path, m)]


def _parse(m: nn.Module, path: str) -> list:
    items = _leaves(m, path)
    ops, i = [], 0
    while i < len(items):
        p, mod = items[i]
        nxt = items[i + 1][1] if i + 1 < len(items) else None
        i += 1
        if isinstance(mod, nn.Conv2d) and type(mod) is nn.Conv2d:
            if mod.dilation != (1, 1) or mod.padding_mode != "zeros":
                raise _unsupported(p, mod, "dilation and non-zero padding modes are not supported")
            pad = mod.padding
            if isinstance(pad, str):
                if pad != "valid":
                    raise _unsupported(p, mod, f"padding='{pad}'")
                pad = (0, 0)
            if isinstance(nxt, nn.BatchNorm2d):
                if not nxt.track_running_stats or nxt.running_mean is None:
                    raise _unsupported(items[i][0], nxt, "no running statistics to fold")
                w, b = fold_bn(mod, nxt)
                i += 1
            else:
                w = mod.weight.detach().to(torch.float64)
                b = (mod.bias.detach().to(torch.float64) if mod.bias is not None
                     else torch.zeros(w.shape[0], dtype=torch.float64))
            ops.append(_Weighted(p, "conv", w, b, stride=_pair(mod.stride), padding=_pair(pad), groups=mod.groups))
        elif type(mod) is nn.Linear:
            b = mod.bias.detach().to(torch.float64) if mod.bias is not None else torch.zeros(mod.out_features,
                                                                                            dtype=torch.float64)
            ops.append(_Weighted(p, "linear", mod.weight.detach().to(torch.float64), b))
        elif type(mod) in (nn.ReLU, nn.ReLU6):
            act = "relu" if type(mod) is nn.ReLU else "relu6"
            last = ops[-1] if ops else None
            if isinstance(last, (_Weighted, _Res)) and last.act is None and not getattr(last, "post", None):
                last.act = act
            else:
                ops.append(_Plain(act))
        elif type(mod) is nn.MaxPool2d:
            if mod.dilation not in (1, (1, 1)) or mod.ceil_mode or mod.return_indices:
                raise _unsupported(p, mod, "dilation, ceil_mode and return_indices are not supported")
            ops.append(_Plain("maxpool", kernel_size=_pair(mod.kernel_size), stride=_pair(mod.stride or mod.kernel_size),
                              padding=_pair(mod.padding)))
        elif type(mod) is nn.AvgPool2d:
            if mod.ceil_mode or mod.divisor_override is not None:
                raise _unsupported(p, mod, "ceil_mode and divisor_override are not supported")
            ops.append(_Plain("avgpool", kernel_size=_pair(mod.kernel_size), stride=_pair(mod.stride or mod.kernel_size),
                              padding=_pair(mod.padding), count_include_pad=mod.count_include_pad))
        elif type(mod) is nn.AdaptiveAvgPool2d:
            if mod.output_size not in (1, (1, 1)):
                raise _unsupported(p, mod, f"output_size {mod.output_size}, only 1 is supported")
            ops.append(_Plain("gap"))
        elif type(mod) is nn.Flatten:
            if mod.start_dim != 1 or mod.end_dim != -1:
                raise _unsupported(p, mod, "only Flatten(1, -1) is supported")
            ops.append(_Plain("flatten"))
        elif isinstance(mod, Residual):
            body = _parse(mod.body, f"{p}.body")
            short = _parse(mod.shortcut, f"{p}.shortcut")
            post = _parse(mod.post, f"{p}.post")
            act = None
            if post and isinstance(post[0], _Plain) and post[0].kind in ("relu", "relu6"):
                act = post.pop(0).kind
            ops.append(_Res(body, short, act, post))
        elif isinstance(mod, nn.BatchNorm2d):
            raise _unsupported(p, mod, "BatchNorm2d must directly follow a Conv2d to be folded")
        else:
            raise _unsupported(p, mod)
    return ops


# ----------------------------------------------------------------------------- front

class QuantizedFront(nn.Module):
    """INT8 frozen front; no trainable parameters. Build it with :func:`quantize_front`."""

    def __init__(self, ops: list, in_qp: tuple[float, int], out_qp: tuple[float, int]):
        super().__init__()
        self.ops, self.in_scale, self.in_zp = ops, in_qp[0], in_qp[1]
        self.out_scale, self.out_zp = out_qp

    @torch.no_grad()
    def forward_int(self, x: torch.Tensor) -> tuple[torch.Tensor, float, int]:
        """Float NCHW input -> (int8 latent codes, scale, zero_point); real = scale * (q - zp)."""
        q = Q.quantize(x, self.in_scale, self.in_zp)
        return _run_int(self.ops, q), self.out_scale, self.out_zp

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float NCHW input -> dequantized float32 latent."""
        q, s, zp = self.forward_int(x)
        return Q.dequantize(q, s, zp)

    def nbytes(self) -> int:
        """Bytes of the deployed front: int8 weights, int32 biases, per-channel int32
        multipliers and int8 shifts, int8 zero points, residual-add params, plus the
        input quantizer (float32 scale + int8 zero point). Activations not included."""
        return sum(op.nbytes() for op in self.ops) + 4 + 1


@torch.no_grad()
def quantize_front(front: nn.Module, calib: torch.Tensor, batch_size: int = 256) -> QuantizedFront:
    """Post-training INT8 quantization of ``front`` calibrated on ``calib`` (float NCHW).

    Activation ranges are the min/max over ``calib`` of the folded float network
    (eval semantics, whatever ``front.training`` is). Raises
    :class:`tinycl.errors.UnsupportedLayerError` naming the first unsupported layer.
    """
    ops = _parse(front, "")
    if not ops:
        raise UnsupportedLayerError("INT8 front: the front has no layers to quantize")
    if calib.numel() == 0:
        raise TinyclError("INT8 front: empty calibration batch")
    in_track = _Track()
    for chunk in torch.split(calib.to(torch.float32), batch_size):
        in_track.see(chunk)
        _run_float(ops, chunk)
    in_qp = in_track.qparams()
    out_qp = _build(ops, in_qp)
    return QuantizedFront(ops, in_qp, out_qp)


@torch.no_grad()
def float_front_eval(front: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Reference: ``front`` run in eval mode; the caller's train/eval mode is restored after."""
    was = front.training
    front.eval()
    try:
        return front(x)
    finally:
        front.train(was)
