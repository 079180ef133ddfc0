"""Integer forward kernels of the INT8 frozen stage (NCHW, INT32 accumulation).

Activations are INT8 codes with a per-tensor zero point (``real = s * (q - zp)``),
weights INT8 codes with zero point 0, biases INT32. Kernels return exactly what an
integer MCU kernel returns:

- :func:`conv2d_acc` / :func:`linear_acc`: the INT32 accumulator
  ``sum (x - x_zp) * w + bias`` (padding is real 0, i.e. code ``x_zp``), as int32.
  Fast path: the sums are computed in float32 (or float64), which is exact because
  every partial sum is an integer below 2^24 (2^53), checked from the worst case
  ``K * 255 * max|w|`` (see ``_exact_sum``); the result is checked to fit int32
  (OverflowError otherwise). :func:`conv2d_int8` / :func:`linear_int8` fuse the
  per-channel requantization.
- Pools keep the input's scale and zero point. Max pool works on codes (monotonic).
  Average pools compute ``round(sum(q - zp) / count) + zp`` with ties away from zero
  (as TFLite's integer AveragePool), padding counted as real 0 when included.
- :func:`relu_int` / :func:`relu6_int`: clamps on codes.
- :func:`add_int8`: residual add with TFLite's fixed-point rescaling.

Use :func:`tinycl.numerics.quant.requantize` to turn an accumulator into INT8 codes.

Fast paths (:mod:`tinycl.kernels.int8_fast`) are taken automatically where their exactness
conditions hold (checked on every call): oneDNN's int8 convolution with VNNI (int32
accumulation), float32 ops on input-channel chunks whose partial sums stay below 2^24, a
float64 requantization, and a table for the residual add. The ``*_ref`` functions and
``fast=False`` run the reference path above; the tests check both give the same codes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tinycl.kernels import int8_fast as fast
from tinycl.kernels.macs import pair
from tinycl.numerics.quant import (INT8_MAX, INT8_MIN, INT32_MAX, INT32_MIN, multiply_by_quantized_multiplier_,
                                   requantize, requantize_, round_div_half_away)

FAST = True  # default for the ``fast_path`` arguments below; False runs the reference everywhere
_EXACT_F64 = 2 ** 53
_EXACT_F32 = 2 ** 24
_MAX_ABS_X = 255  # |q - zp| for INT8 codes and an INT8 zero point


def _use_fast(flag: bool | None) -> bool:
    return FAST if flag is None else bool(flag)


_pair = pair


def _fp32_is_ieee() -> bool:
    """False when torch may compute float32 conv/matmul in reduced precision (TF32/BF16)."""
    if torch.get_float32_matmul_precision() != "highest":
        return False
    conv = getattr(getattr(torch.backends, "mkldnn", None), "conv", None)
    return getattr(conv, "fp32_precision", "none") in ("none", "ieee")


def _exact_sum(op, xs: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    """``op(xs, w)`` (a sum of ``k`` products per output) computed exactly, as int64.

    ``xs`` holds integers in [-255, 255], ``w`` INT8 codes. Every partial sum is an
    integer, so a float sum is exact while it stays below the format's 2^p:
    1. float32 when ``k * 255 * max|w| < 2^24``;
    2. else float32 twice on ``w = 16 * hi + lo`` (``lo`` in [0, 15], ``hi`` in [-8, 8])
       when ``k * 255 * 15 < 2^24`` (``k < 4387``), recombined exactly in float64;
    3. else float64, asserting ``k * 255 * 128 < 2^53``.
    The float32 paths rely on the backend summing exact products (direct or GEMM
    convolution, as oneDNN and BLAS do); tests check bit-exactness against integers.
    """
    wmax = int(w.abs().max()) if w.numel() else 0
    if _fp32_is_ieee() and k * _MAX_ABS_X * wmax < _EXACT_F32:
        return op(xs.to(torch.float32), w.to(torch.float32)).to(torch.int64)
    if _fp32_is_ieee() and k * _MAX_ABS_X * 15 < _EXACT_F32:
        w64 = w.to(torch.int64)
        lo = torch.remainder(w64, 16)
        hi = torch.div(w64 - lo, 16, rounding_mode="floor")
        x32 = xs.to(torch.float32)
        acc = op(x32, hi.to(torch.float32)).to(torch.float64).mul_(16)
        acc += op(x32, lo.to(torch.float32))
        return acc.to(torch.int64)
    assert k * _MAX_ABS_X * 128 < _EXACT_F64, f"float64 fast path not exact for a {k}-term sum"
    return op(xs.to(torch.float64), w.to(torch.float64)).to(torch.int64)


def _finish(acc: torch.Tensor, bias: torch.Tensor | None, view: tuple[int, ...], k: int, w: torch.Tensor) -> torch.Tensor:
    """Add the INT32 bias (int64 math); check the accumulator fits int32 unless the
    worst case ``k * 255 * max|w| + max|bias|`` already does."""
    bound = k * _MAX_ABS_X * (int(w.abs().max()) if w.numel() else 0)
    if bias is not None:
        acc += bias.to(torch.int64).reshape(view)
        bound += int(bias.to(torch.int64).abs().max()) if bias.numel() else 0
    if bound > INT32_MAX and acc.numel() and (int(acc.min()) < INT32_MIN or int(acc.max()) > INT32_MAX):
        raise OverflowError("INT32 accumulator overflow")
    return acc


def conv2d_acc64_ref(x: torch.Tensor, x_zp: int, w: torch.Tensor, bias: torch.Tensor | None = None,
                     stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                     groups: int = 1) -> torch.Tensor:
    """Reference :func:`conv2d_acc` returned as int64 (values checked to fit int32)."""
    k = w.shape[1] * w.shape[2] * w.shape[3]
    xs = x.to(torch.float32).sub_(x_zp)  # exact integers in [-255, 255]

    def op(a, b):
        return F.conv2d(a, b, None, stride=_pair(stride), padding=_pair(padding), groups=groups)

    return _finish(_exact_sum(op, xs, w, k), bias, (1, -1, 1, 1), k, w)


def _conv_acc_fast(x, x_zp, w, bias, stride, padding, groups):
    """``(float acc, bound)`` from a fast exact path, or None (then use the reference). Both
    paths need IEEE float32 (no TF32/BF16 down-conversion, which oneDNN's fpmath mode would
    also allow for the int8 convolution's float output)."""
    if not _fp32_is_ieee():
        return None
    stride, padding = _pair(stride), _pair(padding)
    got = fast.conv_acc_onednn(x, x_zp, w, bias, stride, padding, groups)
    if got is None and groups == 1:
        def op(a, b):
            return F.conv2d(a, b, None, stride=stride, padding=padding)
        got = fast.sum_acc_f32(op, x, x_zp, w, bias, 4)
    return got


def conv2d_acc64(x: torch.Tensor, x_zp: int, w: torch.Tensor, bias: torch.Tensor | None = None,
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 groups: int = 1, fast_path: bool | None = None) -> torch.Tensor:
    """:func:`conv2d_acc` returned as int64 (values checked to fit int32)."""
    got = _conv_acc_fast(x, x_zp, w, bias, stride, padding, groups) if _use_fast(fast_path) else None
    if got is None or got[1] > INT32_MAX:
        return conv2d_acc64_ref(x, x_zp, w, bias, stride, padding, groups)
    return got[0].to(torch.int64).contiguous()


def conv2d_acc(x: torch.Tensor, x_zp: int, w: torch.Tensor, bias: torch.Tensor | None = None,
               stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
               groups: int = 1) -> torch.Tensor:
    """INT32 accumulator of a Conv2d on INT8 codes.

    x: ``[N, Cin, H, W]`` codes, x_zp: its zero point, w: ``[Cout, Cin/groups, kh, kw]``
    codes (zero point 0), bias: ``[Cout]`` int32 or None. Returns ``[N, Cout, Ho, Wo]``
    int32; OverflowError if a sum leaves int32.
    """
    return conv2d_acc64(x, x_zp, w, bias, stride, padding, groups).to(torch.int32)


def linear_acc_ref(x: torch.Tensor, x_zp: int, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Reference :func:`linear_acc`."""
    xs = x.to(torch.float32).sub_(x_zp)
    acc = _exact_sum(lambda a, b: a @ b.t(), xs, w, w.shape[1])
    return _finish(acc, bias, (1, -1), w.shape[1], w).to(torch.int32)


def _linear_acc_fast(x, x_zp, w, bias):
    if not _fp32_is_ieee() or x.dim() != 2:
        return None
    return fast.sum_acc_f32(lambda a, b: a @ b.t(), x, x_zp, w, bias, 2)


def linear_acc(x: torch.Tensor, x_zp: int, w: torch.Tensor, bias: torch.Tensor | None = None,
               fast_path: bool | None = None) -> torch.Tensor:
    """INT32 accumulator of a Linear layer: x ``[N, Fin]`` codes, w ``[Fout, Fin]`` codes."""
    got = _linear_acc_fast(x, x_zp, w, bias) if _use_fast(fast_path) else None
    if got is None or got[1] > INT32_MAX:
        return linear_acc_ref(x, x_zp, w, bias)
    return got[0].to(torch.int32)


def _requant_fast(got, multiplier, shift, out_zp, qmin, qmax, view):
    """Codes from a fast accumulator: float64 requantization, else the int64 one."""
    acc, bound = got
    q = fast.requant_f64(acc, multiplier, shift, out_zp, qmin, qmax, bound)
    if q is None:
        q = requantize_(acc.to(torch.int64), multiplier.reshape(view), shift.reshape(view), out_zp, qmin, qmax)
    return q


def conv2d_int8(x: torch.Tensor, x_zp: int, w: torch.Tensor, bias: torch.Tensor | None,
                multiplier: torch.Tensor, shift: torch.Tensor, out_zp: int, qmin: int = INT8_MIN,
                qmax: int = INT8_MAX, stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                groups: int = 1, fast_path: bool | None = None) -> torch.Tensor:
    """Conv2d + per-channel requantization to INT8 codes (``multiplier``/``shift`` of shape ``[Cout]``).

    ``fast_path=False`` runs the reference (:func:`conv2d_int8_ref`); both give the same codes."""
    got = _conv_acc_fast(x, x_zp, w, bias, stride, padding, groups) if _use_fast(fast_path) else None
    if got is None or got[1] > INT32_MAX:
        return conv2d_int8_ref(x, x_zp, w, bias, multiplier, shift, out_zp, qmin, qmax, stride, padding, groups)
    return _requant_fast(got, multiplier, shift, out_zp, qmin, qmax, (1, -1, 1, 1))


def conv2d_int8_ref(x: torch.Tensor, x_zp: int, w: torch.Tensor, bias: torch.Tensor | None,
                    multiplier: torch.Tensor, shift: torch.Tensor, out_zp: int, qmin: int = INT8_MIN,
                    qmax: int = INT8_MAX, stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                    groups: int = 1) -> torch.Tensor:
    """Reference :func:`conv2d_int8`: exact float sums as int64, int64 requantization."""
    acc = conv2d_acc64_ref(x, x_zp, w, bias, stride, padding, groups)
    return requantize_(acc, multiplier.reshape(1, -1, 1, 1), shift.reshape(1, -1, 1, 1), out_zp, qmin, qmax)


def linear_int8(x: torch.Tensor, x_zp: int, w: torch.Tensor, bias: torch.Tensor | None,
                multiplier: torch.Tensor, shift: torch.Tensor, out_zp: int, qmin: int = INT8_MIN,
                qmax: int = INT8_MAX, fast_path: bool | None = None) -> torch.Tensor:
    """Linear + per-channel requantization to INT8 codes (``fast_path=False``: the reference)."""
    got = _linear_acc_fast(x, x_zp, w, bias) if _use_fast(fast_path) else None
    if got is None or got[1] > INT32_MAX:
        return linear_int8_ref(x, x_zp, w, bias, multiplier, shift, out_zp, qmin, qmax)
    return _requant_fast(got, multiplier, shift, out_zp, qmin, qmax, (1, -1))


def linear_int8_ref(x: torch.Tensor, x_zp: int, w: torch.Tensor, bias: torch.Tensor | None,
                    multiplier: torch.Tensor, shift: torch.Tensor, out_zp: int, qmin: int = INT8_MIN,
                    qmax: int = INT8_MAX) -> torch.Tensor:
    """Reference :func:`linear_int8`."""
    acc = linear_acc_ref(x, x_zp, w, bias)
    return requantize(acc, multiplier.reshape(1, -1), shift.reshape(1, -1), out_zp, qmin, qmax)


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
             out_zp: int, qmin: int = INT8_MIN, qmax: int = INT8_MAX, fast_path: bool | None = None) -> torch.Tensor:
    """Quantized ``a + b`` (TFLite int8 ADD), see :func:`add_int8_ref`. On large INT8 tensors it is
    one lookup in a table of all 65,536 code pairs built with the reference (cached per parameters)."""
    if _use_fast(fast_path) and a.dtype == b.dtype == torch.int8 and a.shape == b.shape and a.numel() >= 2048:
        return fast.add_lut(a, a_zp, b, b_zp, params, out_zp, qmin, qmax, add_int8_ref)
    return add_int8_ref(a, a_zp, b, b_zp, params, out_zp, qmin, qmax)


def add_int8_ref(a: torch.Tensor, a_zp: int, b: torch.Tensor, b_zp: int, params: dict[str, int],
                 out_zp: int, qmin: int = INT8_MIN, qmax: int = INT8_MAX) -> torch.Tensor:
    """Quantized ``a + b`` (TFLite int8 ADD): params from :func:`tinycl.numerics.quant.add_params`.

    ``a' = MBQM((a - a_zp) << L, Ma, sa)``, same for b, then
    ``out = clamp(MBQM(a' + b', Mo, so) + out_zp, qmin, qmax)``.
    """
    ls = params["left_shift"]
    a2 = a.to(torch.int64).sub_(a_zp).bitwise_left_shift_(ls)
    a2 = multiply_by_quantized_multiplier_(a2, params["a_mult"], params["a_shift"])
    b2 = b.to(torch.int64).sub_(b_zp).bitwise_left_shift_(ls)
    a2 += multiply_by_quantized_multiplier_(b2, params["b_mult"], params["b_shift"])
    return requantize_(a2, params["out_mult"], params["out_shift"], out_zp, qmin, qmax)
