"""Fast exact paths of the INT8 kernels (used by :mod:`tinycl.kernels.int8` where they are exact).

Four pieces, each checked rather than assumed:

- :func:`conv_acc_onednn`: the convolution accumulator from oneDNN's int8 convolution
  (u8 activations x s8 weights, int32 accumulation), returned as float32 with scales 1.0.
  Exact when (a) the CPU has VNNI/AMX int8 dot products, which add u8 x s8 products into
  int32 with no int16 intermediate (checked from the CPU flags and by a probe whose int16
  pair sums would saturate), and (b) every value converted to float32 is an integer below
  2^24: ``255 * max_c sum|w[c]| + max|bias| < 2^24`` is checked on the weights of each call.
- :func:`sum_acc_f32`: where oneDNN's path is not exact or not available, float32 convolutions
  (or matmuls) over input-channel chunks whose partial sums stay integers below 2^24, summed
  in float64 (same MACs as one convolution; the backend must sum exact products, as direct
  and GEMM convolutions do, which the reference path relies on too).
- :func:`requant_f64`: ``clamp(MBQM(acc, M, shift) + zp, qmin, qmax)`` computed in float64.
  Only multipliers below 1 (``shift <= 0``). The accumulator is first clamped per channel to
  ``[a_lo, a_hi]``, the smallest and largest accumulators whose code lies in ``[qmin, qmax]``
  (found by bisection with the integer reference; MBQM is monotone and steps by at most 1),
  which makes the final clamp unnecessary and bounds ``|acc * M|``; the whole formula is then
  one floor of a sum of integers, exact in float64 when below 2^53 (checked per layer).
- :func:`add_lut`: the quantized residual add is a function of two INT8 codes, so it is one
  lookup in a 65,536-entry table built with the integer reference itself.
"""

from __future__ import annotations

import re
from functools import lru_cache

import torch

from tinycl.numerics import quant as Q

_EXACT_F32 = 2 ** 24
_EXACT_F64 = 2 ** 53
TILE_ELEMS = 1 << 16  # elements per requantization tile and thread (float64: 512 KiB, fits in L2)
_CACHE_MAX = 256


def _cpu_has_int8_dot() -> bool:
    """True when /proc/cpuinfo lists a VNNI or AMX-INT8 instruction set (x86 Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read(1 << 20)
    except OSError:
        return False
    m = re.search(r"^flags\s*:(.*)$", text, re.M)
    return bool(m) and bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(m.group(1).split()))


@lru_cache(maxsize=64)
def _unit_scales(cout: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ones(cout, dtype=torch.float32), torch.zeros(cout, dtype=torch.int32)


def _qconv(xu, x_zp_u, packed, cout, bias, stride, padding, groups):
    ones, zeros = _unit_scales(cout)
    return torch.ops.onednn.qconv2d_pointwise(xu, 1.0, x_zp_u, packed, ones, zeros, bias, list(stride),
                                              list(padding), [1, 1], groups, 1.0, 0, torch.float32, "none", [], "")


def _prepack(w, x_zp_u, stride, padding, groups):
    return torch.ops.onednn.qconv_prepack(w, torch.ones(w.shape[0], dtype=torch.float32), 1.0, x_zp_u,
                                          list(stride), list(padding), [1, 1], groups, None)


@lru_cache(maxsize=1)
def onednn_int8_exact() -> bool:
    """Whether the oneDNN int8 convolution is available here and accumulates exactly in int32.

    Probe: all-255 activations times all +-127 weights, K = 64*3*3, padding with a zero point:
    int16 pair sums (255*127*2 = 64,770) would saturate and show a wrong sum.
    """
    if not hasattr(torch.ops.onednn, "qconv2d_pointwise") or not _cpu_has_int8_dot():
        return False
    try:
        xu = torch.full((1, 64, 3, 3), 255, dtype=torch.uint8)
        xu[0, 1::2] = 0
        w = torch.full((2, 64, 3, 3), 127, dtype=torch.int8)
        w[1] = -127
        got = _qconv(xu, 3, _prepack(w, 3, (1, 1), (1, 1), 1), 2, None, (1, 1), (1, 1), 1)
        want = torch.nn.functional.conv2d(xu.to(torch.float64) - 3, w.to(torch.float64), padding=1)
        return bool(torch.equal(got.to(torch.float64), want))
    except (RuntimeError, TypeError, AttributeError):
        return False


_packed: dict = {}


def _packed_weight(w: torch.Tensor, bias: torch.Tensor | None, x_zp_u: int, stride, padding, groups):
    """``(packed w, bound)``: oneDNN-packed ``w`` and ``255 * max_c sum|w[c]| + max|bias|``,
    cached; an entry is used only if its weights and bias are equal to these."""
    key = (tuple(w.shape), x_zp_u, tuple(stride), tuple(padding), groups, w.data_ptr())
    hit = _packed.get(key)
    if hit is not None and torch.equal(hit[0], w) and _same(hit[1], bias):
        return hit[2:]
    if len(_packed) >= _CACHE_MAX:
        _packed.clear()
    wsum = int(w.to(torch.int32).abs().reshape(w.shape[0], -1).sum(dim=1).max()) if w.numel() else 0
    packed = _prepack(w.contiguous(), x_zp_u, stride, padding, groups)
    bound = 255 * wsum + _bias_max(bias)
    b32 = bias.to(torch.float32) if bias is not None and bound < _EXACT_F32 else None  # exact: |bias| < 2^24
    _packed[key] = (w.clone(), None if bias is None else bias.clone(), packed, bound, b32)
    return packed, bound, b32


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and a.shape == b.shape
                                         and a.dtype == b.dtype and torch.equal(a, b))


def _bias_max(bias: torch.Tensor | None) -> int:
    return int(bias.to(torch.int64).abs().max()) if bias is not None and bias.numel() else 0


def conv_acc_onednn(x: torch.Tensor, x_zp: int, w: torch.Tensor, bias: torch.Tensor | None,
                    stride: tuple[int, int], padding: tuple[int, int], groups: int):
    """``(acc, bound)``: the Conv2d accumulator ``sum (x - x_zp) * w + bias`` as exact float32
    (channels-last) and a bound on its magnitude; None when this path is not exact here (no
    VNNI, or the 2^24 bound fails)."""
    if x.dtype != torch.int8 or w.dtype != torch.int8 or x.dim() != 4 or x.numel() == 0 or not onednn_int8_exact():
        return None
    x_zp_u = int(x_zp) + 128  # code q is byte q + 128 as uint8
    if not 0 <= x_zp_u <= 255:
        return None
    packed, bound, b32 = _packed_weight(w, bias, x_zp_u, stride, padding, groups)
    if bound >= _EXACT_F32:
        return None
    xu = x.view(torch.uint8).bitwise_xor(128)
    return _qconv(xu, x_zp_u, packed, w.shape[0], b32, stride, padding, groups), bound


def _chunks(wabs: torch.Tensor, limit: int) -> list[tuple[int, int]] | None:
    """Split the input channels (dim 1 of ``|w|`` summed to ``[Cout, Cin]``) into consecutive
    ranges whose ``255 * max_c sum|w|`` stays below ``limit``; None if one channel alone exceeds it."""
    out, start, run = [], 0, torch.zeros(wabs.shape[0], dtype=torch.int64)
    for ci in range(wabs.shape[1]):
        col = wabs[:, ci]
        if 255 * int(col.max()) >= limit:
            return None
        if 255 * int((run + col).max()) >= limit:
            out.append((start, ci))
            start, run = ci, torch.zeros_like(run)
        run += col
    out.append((start, wabs.shape[1]))
    return out


def sum_acc_f32(op, x: torch.Tensor, x_zp: int, w: torch.Tensor, bias: torch.Tensor | None, dims: int):
    """``(acc, bound)`` of ``op(x - x_zp, w) + bias`` by float32 ops, each exact because its
    partial sums are integers below 2^24: the reduction (input channels, dim 1 of ``w``) is split
    into chunks with ``255 * max_c sum|w| < 2^24``, one float32 op per chunk (same MACs in total),
    summed in float64 (exact below 2^53). ``op`` must be a dense (groups = 1) conv or matmul.
    None if a single input channel exceeds the bound or the total exceeds 2^53."""
    if x.dtype != torch.int8 or w.dtype != torch.int8 or x.numel() == 0:
        return None
    wabs = w.to(torch.int64).abs()
    wabs = wabs.reshape(wabs.shape[0], wabs.shape[1], -1).sum(dim=2)
    bound = 255 * int(wabs.sum(dim=1).max()) + _bias_max(bias)
    if bound >= _EXACT_F64:
        return None
    parts = _chunks(wabs, _EXACT_F32)
    if parts is None:
        return None
    xs = x.to(torch.float32).sub_(x_zp)
    view = (1, -1) + (1,) * (dims - 2)
    if len(parts) == 1 and bound < _EXACT_F32:
        acc = op(xs, w.to(torch.float32))
        return (acc.add_(bias.to(torch.float32).reshape(view)) if bias is not None else acc), bound
    acc = None
    for a, b in parts:
        part = op(xs[:, a:b], w[:, a:b].to(torch.float32)).to(torch.float64)
        acc = part if acc is None else acc.add_(part)
    if bias is not None:
        acc += bias.to(torch.float64).reshape(view)
    return acc, bound


# ----------------------------------------------------------------------------- requantization

def _mbqm_ref(a: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return Q.multiply_by_quantized_multiplier(a, m, s)


def _first_at_least(m, s, zp, target, lo, hi):
    """Per channel, the smallest a in [lo, hi] with MBQM(a) + zp >= target (hi if none)."""
    lo = torch.full_like(m, lo)
    hi = torch.full_like(m, hi)
    while bool((lo < hi).any()):
        mid = torch.div(lo + hi, 2, rounding_mode="floor")
        ok = _mbqm_ref(mid, m, s) + zp >= target
        live = lo < hi
        hi = torch.where(live & ok, mid, hi)
        lo = torch.where(live & ~ok, mid + 1, lo)
    return lo


@lru_cache(maxsize=_CACHE_MAX)
def _requant_consts(mult: tuple, shift: tuple, zp: int, qmin: int, qmax: int, bound: int):
    """Per-channel float constants of :func:`requant_f64`, or None when it is not exact."""
    m = torch.tensor(mult, dtype=torch.int64)
    s = torch.tensor(shift, dtype=torch.int64)
    if bool((s > 0).any()) or not bool(((m >= (1 << 30)) | ((m == 0) & (s == 0))).all()) or qmin > qmax:
        return None
    a_lo = _first_at_least(m, s, zp, qmin, -bound, bound)
    a_hi = _first_at_least(m, s, zp, qmax + 1, -bound, bound + 1) - 1
    a_hi = torch.maximum(a_hi, a_lo)
    # the clamp is exact only if the codes at the ends are qmin / qmax (or the ends are +-bound)
    lo_code = _mbqm_ref(a_lo, m, s) + zp
    hi_code = _mbqm_ref(a_hi, m, s) + zp
    if not (bool(((lo_code == qmin) | (a_lo == -bound)).all()) and bool(((hi_code == qmax) | (a_hi == bound)).all())
            and bool((lo_code >= qmin).all()) and bool((hi_code <= qmax).all())):
        return None
    e = -s
    d = torch.ones_like(e) << (e + 31)
    # numerator of the single floor: a*M + 2^30 + 2^(30+e) + zp*D where RDBP (e > 0) rounds
    # ties away from zero: 2^31 less where a*M + 2^30 < 0, i.e. where a < 0 (a == -1 with
    # M == 2^30 gives floor(1/2 - 2^-e) = 0 either way). So it is
    # a*M + c + sign(a)*2^30 with c = 2^(30+e) + zp*D (sign(0) = 0 gives the same floor).
    c = torch.where(e > 0, (torch.ones_like(e) << (e + 30)), 1 << 30)
    h = torch.where(e > 0, 1 << 30, 0)
    amax = torch.maximum(a_lo.abs(), a_hi.abs())
    if bool((amax * m + c + h >= _EXACT_F64).any()):
        return None
    out_zp = 0.0  # zp is added inside the floor (zp * D in c) when that stays exact, else after it
    if bool((amax * m + (c + zp * d).abs() + h >= _EXACT_F64).any()):
        out_zp = float(zp)
    else:
        c = c + zp * d
    f64 = torch.float64
    inv_d = 1.0 / d.to(f64)  # powers of two: every scaled term stays on the grid 1/D, exactly
    fb = torch.float32 if bound < _EXACT_F32 else f64  # the clamp bounds, exact in either
    return (a_lo.to(fb), a_hi.to(fb), m.to(f64) * inv_d, c.to(f64) * inv_d, h.to(f64) * inv_d, out_zp)


@lru_cache(maxsize=_CACHE_MAX)
def _requant_view(mult: tuple, shift: tuple, zp: int, qmin: int, qmax: int, bound: int, dim: int):
    consts = _requant_consts(mult, shift, zp, qmin, qmax, bound)
    if consts is None:
        return None
    view = (1, -1) + (1,) * (dim - 2)
    return tuple(v.reshape(view) for v in consts[:5]) + (consts[5],)


def requant_f64(acc: torch.Tensor, mult: torch.Tensor, shift: torch.Tensor, zp: int, qmin: int, qmax: int,
                bound: int) -> torch.Tensor | None:
    """INT8 codes of a float accumulator ``[N, C, ...]`` holding integers with ``|acc| <= bound``
    (per-channel ``mult``/``shift`` of C entries); same result as
    :func:`tinycl.numerics.quant.requantize`, in the memory format of ``acc``. None when the
    float64 formula is not exact for these multipliers. Works in tiles of about
    :data:`TILE_ELEMS` elements (one sample or more) so that its passes stay in cache."""
    if acc.dim() < 2 or mult.numel() != acc.shape[1] or shift.numel() != acc.shape[1]:
        return None
    consts = _requant_view(tuple(mult.reshape(-1).tolist()), tuple(shift.reshape(-1).tolist()),
                           int(zp), int(qmin), int(qmax), int(bound), acc.dim())
    if consts is None:
        return None
    lo, hi, m, c, h, out_zp = consts

    def tile(part: torch.Tensor) -> torch.Tensor:
        a = torch.clamp(part, lo, hi)  # exact: float32 bounds when bound < 2^24, else float64
        t = torch.addcmul(c, a, m)  # float64
        t.addcmul_(torch.sign(a), h)  # sign(0) = 0 instead of 1 adds 2^-(e+1) less to 1/2 + zp: same floor
        t.floor_()
        return t.add_(out_zp) if out_zp else t

    n = acc.shape[0]
    step = max(1, TILE_ELEMS * torch.get_num_threads() // max(1, acc[0].numel()))  # a tile per thread
    if step >= n:
        return tile(acc).to(torch.int8)
    out = torch.empty_like(acc, dtype=torch.int8)
    for i in range(0, n, step):
        out[i:i + step].copy_(tile(acc[i:i + step]))
    return out


# ----------------------------------------------------------------------------- residual add

@lru_cache(maxsize=_CACHE_MAX)
def _add_table(a_zp: int, b_zp: int, params: tuple, out_zp: int, qmin: int, qmax: int, ref) -> torch.Tensor:
    """Table T with ``T[(a mod 256) * 256 + (b mod 256)] = add(a, b)`` for all INT8 codes a, b."""
    codes = torch.arange(-128, 128, dtype=torch.int64)
    a = codes.repeat_interleave(256).to(torch.int8)
    b = codes.repeat(256).to(torch.int8)
    vals = ref(a, a_zp, b, b_zp, dict(params), out_zp, qmin, qmax)
    table = torch.empty(65536, dtype=torch.int8)
    table[torch.remainder(a.to(torch.int64), 256) * 256 + torch.remainder(b.to(torch.int64), 256)] = vals
    return table


def _flat(t: torch.Tensor, cl: bool) -> torch.Tensor:
    return t.permute(0, 2, 3, 1).reshape(-1) if cl else t.reshape(-1)


def add_lut(a, a_zp, b, b_zp, params, out_zp, qmin, qmax, ref) -> torch.Tensor:
    """:func:`tinycl.kernels.int8.add_int8` by table lookup (``ref`` is that reference);
    keeps channels-last order when both inputs have it."""
    table = _add_table(int(a_zp), int(b_zp), tuple(sorted(params.items())), int(out_zp), int(qmin), int(qmax), ref)
    cl = a.dim() == 4 and all(t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
                              for t in (a, b))
    af, bf = _flat(a, cl), _flat(b, cl)
    idx = torch.add(bf.view(torch.uint8).to(torch.int32), af.view(torch.uint8), alpha=256)
    out = table.index_select(0, idx)  # index (a mod 256) * 256 + (b mod 256)
    if cl:
        n, c, hh, ww = a.shape
        return out.view(n, hh, ww, c).permute(0, 3, 1, 2)
    return out.view(a.shape)
