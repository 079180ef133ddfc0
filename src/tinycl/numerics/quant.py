"""INT8 quantizers and fixed-point requantization (CMSIS-NN / TFLite semantics).

Scheme used across tinycl's INT8 frozen stage:

- Weights: symmetric, per output channel, codes in [-127, 127] (zero point 0).
  ``scale[c] = max|w[c]| / 127``.
- Activations: per tensor, *signed* INT8 with a zero point (asymmetric), codes in
  [-128, 127], ``real = scale * (q - zero_point)``. The range is widened to contain 0
  so that real 0 (padding, ReLU floor) is exactly a code. After a ReLU the range is
  [0, max], the zero point is -128 and all 256 codes are used, so this loses nothing
  against unsigned UINT8 while keeping one code path.
- Biases: INT32, ``scale = in_scale * w_scale[c]``, zero point 0.
- Rounding of real -> code: round half away from zero (as ``std::round``).

Fixed-point requantization (integer only, as MCU kernels do): a positive real
multiplier ``m`` is stored as ``(M, shift)`` with ``M`` an int32 in [2^30, 2^31) and
``m ~= M * 2^(shift - 31)``; :func:`multiply_by_quantized_multiplier` computes
``round(x * m)`` with

1. a left shift by ``max(shift, 0)`` (saturated to int32 here; overflow is undefined
   in TFLite and CMSIS-NN),
2. ``SaturatingRoundingDoublingHighMul(x, M) = round(x * M / 2^31)``, ties toward
   +infinity (nudge ``2^30`` for a non-negative product, ``1 - 2^30`` otherwise, then
   truncating division),
3. ``RoundingDivideByPOT`` by ``max(-shift, 0)``, ties away from zero.

Tolerance against the exact rational ``round_half_away(x * m)`` (checked in
tests/test_quant_int8.py): the result differs by at most 1 LSB, and only when
``x * M * 2^(shift-31)`` lies within ``2^-(rs+1)`` of a half-integer (``rs`` the right
shift: step 2 rounds before step 3) or when the 2^-31 relative error of ``M`` moves
the product across a half-integer. In all cases
``|result - x*m| <= 1/2 + 2^-(rs+1) + |x*m| * 2^-31``.
"""

from __future__ import annotations

import math

import torch

INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1
WEIGHT_QMAX = 127  # symmetric weights use [-127, 127]


# ----------------------------------------------------------------------------- rounding

def round_half_away(x: torch.Tensor) -> torch.Tensor:
    """Round a float tensor to the nearest integer, ties away from zero."""
    return torch.sign(x) * torch.floor(torch.abs(x) + 0.5)


def round_div_half_away(num: torch.Tensor, den: int | torch.Tensor) -> torch.Tensor:
    """Integer ``round(num / den)`` with ties away from zero, ``den > 0`` (int tensors)."""
    num = num.to(torch.int64)
    half = torch.div(torch.as_tensor(den, dtype=torch.int64), 2, rounding_mode="floor")
    pos = torch.div(num + half, den, rounding_mode="trunc")
    neg = torch.div(num - half, den, rounding_mode="trunc")
    return torch.where(num >= 0, pos, neg)


# ----------------------------------------------------------------------------- qparams

def choose_act_qparams(lo: float, hi: float, qmin: int = INT8_MIN, qmax: int = INT8_MAX) -> tuple[float, int]:
    """Per-tensor asymmetric (scale, zero_point) covering the real range [lo, hi].

    The range is widened to include 0 so real 0 is exactly representable; a
    degenerate range (lo == hi == 0) gets scale 1.0. ``scale`` is in real units per code.
    """
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"activation range must be finite, got [{lo}, {hi}]")
    if hi == lo:
        return 1.0, 0 if qmin <= 0 <= qmax else qmin
    scale = (hi - lo) / (qmax - qmin)
    zp = int(round_half_away(torch.tensor(qmin - lo / scale, dtype=torch.float64)).item())
    return scale, max(qmin, min(qmax, zp))


def weight_scales_per_channel(w: torch.Tensor, qmax: int = WEIGHT_QMAX) -> torch.Tensor:
    """Symmetric per-output-channel scales (float64, shape ``[w.shape[0]]``).

    ``scale[c] = max|w[c]| / qmax``; an all-zero channel gets scale 1.0.
    """
    amax = w.detach().to(torch.float64).abs().reshape(w.shape[0], -1).amax(dim=1)
    return torch.where(amax > 0, amax / qmax, torch.ones_like(amax))


# ----------------------------------------------------------------------------- quantize

def quantize(x: torch.Tensor, scale: float | torch.Tensor, zero_point: int | torch.Tensor = 0,
             qmin: int = INT8_MIN, qmax: int = INT8_MAX, dtype: torch.dtype = torch.int8) -> torch.Tensor:
    """Codes ``clamp(round_half_away(x / scale) + zero_point, qmin, qmax)``.

    ``scale``/``zero_point`` may be tensors broadcastable against ``x`` (per channel).
    Values outside the representable range saturate.
    """
    q = round_half_away(x.to(torch.float64) / torch.as_tensor(scale, dtype=torch.float64))
    q = q + torch.as_tensor(zero_point, dtype=torch.float64)
    return q.clamp(qmin, qmax).to(dtype)


def dequantize(q: torch.Tensor, scale: float | torch.Tensor, zero_point: int | torch.Tensor = 0) -> torch.Tensor:
    """Reals ``scale * (q - zero_point)`` as float32."""
    zp = torch.as_tensor(zero_point, dtype=torch.float64)
    return ((q.to(torch.float64) - zp) * torch.as_tensor(scale, dtype=torch.float64)).to(torch.float32)


def quantize_weight_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """INT8 codes in [-127, 127] and float64 per-channel scales of a weight ``[Cout, ...]``."""
    s = weight_scales_per_channel(w)
    shape = (-1,) + (1,) * (w.dim() - 1)
    return quantize(w, s.reshape(shape), 0, -WEIGHT_QMAX, WEIGHT_QMAX), s


def quantize_bias(b: torch.Tensor, in_scale: float, w_scales: torch.Tensor) -> torch.Tensor:
    """INT32 bias codes with scale ``in_scale * w_scales`` (saturated to int32)."""
    return quantize(b, in_scale * w_scales, 0, INT32_MIN, INT32_MAX, torch.int32)


# ----------------------------------------------------------------------------- fixed point

def quantize_multiplier(real: float) -> tuple[int, int]:
    """``(M, shift)`` with ``M`` int32 in [2^30, 2^31) and ``real ~= M * 2^(shift-31)``.

    As TFLite's ``QuantizeMultiplier``: relative error of the representation at most
    2^-31. ``real == 0`` gives ``(0, 0)``; negative or non-finite reals are refused;
    reals below ~2^-31 (shift < -31) flush to ``(0, 0)``.
    """
    real = float(real)
    if not math.isfinite(real) or real < 0:
        raise ValueError(f"multiplier must be finite and >= 0, got {real}")
    if real == 0.0:
        return 0, 0
    mant, shift = math.frexp(real)  # real = mant * 2^shift, mant in [0.5, 1)
    m = int(round_half_away(torch.tensor(mant * 2.0 ** 31, dtype=torch.float64)).item())
    if m == 2 ** 31:
        m //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        raise ValueError(f"multiplier {real} is too large for a 31-bit shift")
    return m, shift


def quantize_multipliers(reals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Vector form of :func:`quantize_multiplier`: int64 tensors ``(M, shift)``."""
    pairs = [quantize_multiplier(r) for r in reals.reshape(-1).tolist()]
    m = torch.tensor([p[0] for p in pairs], dtype=torch.int64).reshape(reals.shape)
    s = torch.tensor([p[1] for p in pairs], dtype=torch.int64).reshape(reals.shape)
    return m, s


def saturating_rounding_doubling_high_mul(a: torch.Tensor, b: int | torch.Tensor) -> torch.Tensor:
    """gemmlowp's ``SaturatingRoundingDoublingHighMul`` on int32 values held in int64.

    ``round(a * b / 2^31)`` with ties toward +infinity; ``a == b == INT32_MIN`` saturates
    to INT32_MAX. gemmlowp adds a nudge (``2^30``, or ``1 - 2^30`` for a negative
    product) and truncates toward zero; for a negative product
    ``trunc((ab + 1 - 2^30) / 2^31) == floor((ab + 2^30) / 2^31)``, so both cases are
    one arithmetic shift ``(ab + 2^30) >> 31``.
    """
    b = torch.as_tensor(b, dtype=torch.int64)
    ab = a.to(torch.int64) * b
    ab += 1 << 30
    ab >>= 31
    if bool((b == INT32_MIN).any()):
        ab = torch.where((a == INT32_MIN) & (b == INT32_MIN), torch.tensor(INT32_MAX), ab)
    return ab


def rounding_divide_by_pot(x: torch.Tensor, exponent: int | torch.Tensor) -> torch.Tensor:
    """gemmlowp's ``RoundingDivideByPOT``: ``round(x / 2^exponent)``, ties away from zero.

    gemmlowp adds 1 when the remainder exceeds ``mask >> 1`` (plus 1 if x < 0); the same
    result is ``(x + half - [x < 0 and exponent > 0]) >> exponent``, ``half = 2^exponent >> 1``.
    """
    return _rounding_divide_by_pot_(x.to(torch.int64, copy=True), exponent)


def _rounding_divide_by_pot_(x: torch.Tensor, exponent: int | torch.Tensor) -> torch.Tensor:
    """In-place :func:`rounding_divide_by_pot` on an int64 tensor that may be overwritten."""
    e = torch.as_tensor(exponent, dtype=torch.int64)
    positive = e > 0
    if not bool(positive.any()):
        return x
    neg = x >> 63  # -1 where x < 0, else 0
    if not bool(positive.all()):
        neg *= positive.to(torch.int64)
    x += neg
    x += (torch.ones_like(e) << e) >> 1
    x >>= e
    return x


def multiply_by_quantized_multiplier(x: torch.Tensor, multiplier: int | torch.Tensor,
                                     shift: int | torch.Tensor) -> torch.Tensor:
    """TFLite ``MultiplyByQuantizedMultiplier``: ``round(x * M * 2^(shift-31))`` in int64.

    ``x`` holds int32 values; ``multiplier``/``shift`` are ints or tensors broadcastable
    against ``x`` (per channel). The left-shifted value saturates to int32.
    """
    s = torch.as_tensor(shift, dtype=torch.int64)
    left = s.clamp(min=0)
    right = (-s).clamp(min=0)
    if bool((left > 0).any()):
        x = (x.to(torch.int64) << left).clamp(INT32_MIN, INT32_MAX)
    return _rounding_divide_by_pot_(saturating_rounding_doubling_high_mul(x, multiplier), right)


def requantize(acc: torch.Tensor, multiplier: int | torch.Tensor, shift: int | torch.Tensor,
               zero_point: int, qmin: int = INT8_MIN, qmax: int = INT8_MAX) -> torch.Tensor:
    """INT32 accumulator -> INT8 codes: ``clamp(MBQM(acc, M, shift) + zero_point, qmin, qmax)``.

    A fused ReLU is ``qmin = zero_point``; a fused ReLU6 also lowers ``qmax``. A
    non-int32 ``acc`` is checked to hold int32 values (OverflowError otherwise).
    """
    if acc.dtype != torch.int32 and acc.numel() and (int(acc.min()) < INT32_MIN or int(acc.max()) > INT32_MAX):
        raise OverflowError("accumulator outside int32 range")
    return requantize_(acc.to(torch.int64, copy=True), multiplier, shift, zero_point, qmin, qmax)


def multiply_by_quantized_multiplier_(x: torch.Tensor, multiplier: int | torch.Tensor,
                                      shift: int | torch.Tensor) -> torch.Tensor:
    """:func:`multiply_by_quantized_multiplier` on an int64 tensor it may overwrite.

    Same result in fewer passes when no shift is positive: with ``e = -shift`` and
    ``half = 2^e >> 1``, ``RDBP(floor((ab + 2^30) / 2^31), e)`` equals
    ``(ab + 2^30 + half * 2^31 - [e > 0 and ab < -2^30] * 2^31) >> (31 + e)``
    (nested floors of divisions by powers of two compose; ``ab < -2^30`` is exactly
    "high half < 0", where RDBP's ties go away from zero).
    """
    s = torch.as_tensor(shift, dtype=torch.int64)
    m = torch.as_tensor(multiplier, dtype=torch.int64)
    if bool((s > 0).any()) or bool((m == INT32_MIN).any()):
        return multiply_by_quantized_multiplier(x, m, s)
    e = -s
    half31 = ((torch.ones_like(e) << e) >> 1) << 31  # 2^(e-1) * 2^31, 0 where e == 0
    x *= m
    x += half31 + (1 << 30)
    if bool((e > 0).any()):
        # ab < -2^30 is x < half31 now; never true where e == 0 (threshold -2^63)
        thr = torch.where(e > 0, half31, torch.full_like(e, -(2 ** 63)))
        x.add_((x < thr).to(torch.int64), alpha=-(1 << 31))
    x >>= e + 31
    return x


def requantize_(acc: torch.Tensor, multiplier: int | torch.Tensor, shift: int | torch.Tensor,
                zero_point: int, qmin: int = INT8_MIN, qmax: int = INT8_MAX) -> torch.Tensor:
    """:func:`requantize` on an int64 tensor of int32 values that it may overwrite (no range check)."""
    out = multiply_by_quantized_multiplier_(acc, multiplier, shift)
    out += zero_point
    return out.clamp_(qmin, qmax).to(torch.int8)


# ----------------------------------------------------------------------------- residual add

def add_params(a_scale: float, b_scale: float, out_scale: float, left_shift: int = 20) -> dict[str, int]:
    """Fixed-point parameters of a quantized ``a + b`` (TFLite int8 ADD scheme).

    Inputs are shifted left by ``left_shift`` and rescaled to a common scale
    ``2 * max(a_scale, b_scale)``; the sum is rescaled to ``out_scale``.
    """
    twice_max = 2.0 * max(a_scale, b_scale)
    ma, sa = quantize_multiplier(a_scale / twice_max)
    mb, sb = quantize_multiplier(b_scale / twice_max)
    mo, so = quantize_multiplier(twice_max / ((1 << left_shift) * out_scale))
    return {"left_shift": left_shift, "a_mult": ma, "a_shift": sa, "b_mult": mb, "b_shift": sb,
            "out_mult": mo, "out_shift": so}
