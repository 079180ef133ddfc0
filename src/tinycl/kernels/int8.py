"""Integer forward kernels of the INT8 frozen stage (NCHW, INT32 accumulation).

Activations are INT8 codes with a per-tensor zero point (``real = s * (q - zp)``),
weights INT8 codes with zero point 0, biases INT32. Kernels return exactly what an
integer MCU kernel returns:

- :func:`conv2d_acc` / :func:`linear_acc`: the INT32 accumulator
  ``sum (x - x_zp) * w + bias`` (padding is real 0, i.e. code ``x_zp``), as int32.
  Fast path: the sums are computed in float64, which is exact because every partial
  sum is an integer below 2^53 (checked from the worst case ``K * 255 * 127``);
  the result is checked to fit int32 (OverflowError otherwise).
- Pools keep the input's scale and zero point. Max pool works on codes (monotonic).
  Average pools compute ``round(sum(q - zp) / count) + zp`` with ties away from zero
  (as TFLite's integer AveragePool), padding counted as real 0 when included.
- :func:`relu_int` / :func:`relu6_int`: clamps on codes.
- :func:`add_int8`: residual add with TFLite's fixed-point rescaling.

Use :func:`tinycl.numerics.quant.requantize` to turn an accumulator into INT8 codes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tinycl.numerics.quant import (INT8_MAX, INT8_MIN, INT32_MAX, INT32_MIN, multiply_by_quantized_multiplier,
                                   round_div_half_away)

_EXACT_F64 = 2 ** 53
_MAX_ABS_X = 255  # |q - zp| for INT8 codes and an INT8 zero point
_MAX_ABS_W = 128


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _check_exact(k: int, bias: torch.Tensor | None) -> None:
    bound = k * _MAX_ABS_X * _MAX_ABS_W + (int(bias.abs().max()) if bias is not None and bias.numel() else 0)
    assert bound < _EXACT_F64, f"float64 fast path not exact: worst-case |acc| {bound} >= 2^53"


def _to_int32(acc: torch.Tensor) -> torch.Tensor:
    if acc.numel() and (acc.min().item() < INT32_MIN or acc.max().item() > INT32_MAX):
        raise OverflowError("INT32 accumulator overflow")
    return acc.to(torch.int32)


def conv2d_acc(x: torch.Tensor, x_zp: int, w: torch.Tensor, bias: torch.Tensor | None = None,
               stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
               groups: int = 1) -> torch.Tensor:
    """INT32 accumulator of a Conv2d on INT8 codes.

    x: ``[N, Cin, H, W]`` codes, x_zp: its zero point, w: ``[Cout, Cin/groups, kh, kw]``
    codes (zero point 0), bias: ``[Cout]`` int32 or None. Returns ``[N, Cout, Ho, Wo]`` int32.
    """
    _check_exact(w.shape[1] * w.shape[2] * w.shape[3], bias)
    xf = x.to(torch.float64) - float(x_zp)
    acc = F.conv2d(xf, w.to(torch.float64), None if bias is None else bias.to(torch.float64),
                   stride=_pair(stride), padding=_pair(padding), groups=groups)
    return _to_int32(acc)


def linear_acc(x: torch.Tensor, x_zp: int, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """INT32 accumulator of a Linear layer: x ``[N, Fin]`` codes, w ``[Fout, Fin]`` codes."""
    _check_exact(w.shape[1], bias)
    acc = (x.to(torch.float64) - float(x_zp)) @ w.to(torch.float64).t()
    if bias is not None:
        acc = acc + bias.to(torch.float64)
    return _to_int32(acc)


def relu_int(q: torch.Tensor, zp: int) -> torch.Tensor:
    """ReLU on codes: ``max(q, zp)``."""
    return q.clamp(min=zp)


def relu6_int(q: torch.Tensor, zp: int, scale: float) -> torch.Tensor:
    """ReLU6 on codes: ``clamp(q, zp, zp + round(6 / scale))`` (upper bound saturates at 127)."""
    top = min(INT8_MAX, zp + int(torch.floor(torch.tensor(6.0 / scale, dtype=torch.float64) + 0.5)))
    return q.clamp(min=zp, max=top)


def maxpool2d_int8(q: torch.Tensor, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                   padding: int | tuple[int, int] = 0) -> torch.Tensor:
    """Max pool on INT8 codes (padding never wins: it acts as -infinity, as in torch)."""
    stride = kernel_size if stride is None else stride
    out = F.max_pool2d(q.to(torch.float32), _pair(kernel_size), _pair(stride), _pair(padding))
    return out.to(torch.int8)


def avgpool2d_int8(q: torch.Tensor, zp: int, kernel_size: int | tuple[int, int],
                   stride: int | tuple[int, int] | None = None, padding: int | tuple[int, int] = 0,
                   count_include_pad: bool = True) -> torch.Tensor:
    """Average pool on INT8 codes: ``round(sum(q - zp) / count) + zp``, ties away from zero.

    ``count`` is ``kh*kw`` when ``count_include_pad`` (padding = real 0), else the
    number of real pixels in the window.
    """
    kh, kw = _pair(kernel_size)
    stride = _pair(kernel_size if stride is None else stride)
    padding = _pair(padding)
    xf = q.to(torch.float64) - float(zp)
    # window sums are integers far below 2^53: exact in float64
    sums = F.avg_pool2d(xf, (kh, kw), stride, padding, count_include_pad=True, divisor_override=1)
    sums = sums.to(torch.int64)
    if count_include_pad:
        count = torch.tensor(kh * kw, dtype=torch.int64)
    else:
        ones = torch.ones((1, 1) + tuple(q.shape[2:]), dtype=torch.float64)
        count = F.avg_pool2d(ones, (kh, kw), stride, padding, count_include_pad=True,
                             divisor_override=1).to(torch.int64)
    return (round_div_half_away(sums, count) + zp).clamp(INT8_MIN, INT8_MAX).to(torch.int8)


def global_avgpool_int8(q: torch.Tensor, zp: int) -> torch.Tensor:
    """Global average pool ``[N, C, H, W] -> [N, C, 1, 1]`` with the rounding of :func:`avgpool2d_int8`."""
    sums = (q.to(torch.int64) - zp).sum(dim=(2, 3), keepdim=True)
    count = q.shape[2] * q.shape[3]
    return (round_div_half_away(sums, count) + zp).clamp(INT8_MIN, INT8_MAX).to(torch.int8)


def add_int8(a: torch.Tensor, a_zp: int, b: torch.Tensor, b_zp: int, params: dict[str, int],
             out_zp: int, qmin: int = INT8_MIN, qmax: int = INT8_MAX) -> torch.Tensor:
    """Quantized ``a + b`` (TFLite int8 ADD): params from :func:`tinycl.numerics.quant.add_params`.

    ``a' = MBQM((a - a_zp) << L, Ma, sa)``, same for b, then
    ``out = clamp(MBQM(a' + b', Mo, so) + out_zp, qmin, qmax)``.
    """
    ls = params["left_shift"]
    a2 = multiply_by_quantized_multiplier((a.to(torch.int64) - a_zp) << ls, params["a_mult"], params["a_shift"])
    b2 = multiply_by_quantized_multiplier((b.to(torch.int64) - b_zp) << ls, params["b_mult"], params["b_shift"])
    out = multiply_by_quantized_multiplier(a2 + b2, params["out_mult"], params["out_shift"]) + out_zp
    return out.clamp(qmin, qmax).to(torch.int8)
