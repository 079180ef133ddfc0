"""INT8 quantizers and fixed-point requantization vs hand-worked values and exact rationals."""

from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings, strategies as st

from tinycl.numerics import quant as Q

I32 = st.integers(Q.INT32_MIN, Q.INT32_MAX)
SETTINGS = settings(max_examples=60, deadline=None)


def exact_round_half_away(f: Fraction) -> int:
    """Python-int rounding of a rational, ties away from zero."""
    sign = -1 if f < 0 else 1
    a = abs(f)
    return sign * ((a.numerator * 2 + a.denominator) // (2 * a.denominator))


# gemmlowp semantics written literally with C integer rules (truncating division)
def c_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def ref_srdhm(a: int, b: int) -> int:
    if a == b == Q.INT32_MIN:
        return Q.INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return c_div(ab + nudge, 1 << 31)


def ref_rdbp(x: int, e: int) -> int:
    mask = (1 << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if remainder > threshold else 0)


# ----------------------------------------------------------------------------- rounding

def test_round_half_away_hand_values():
    x = torch.tensor([0.5, -0.5, 1.5, -2.5, 2.4, -2.6, 0.0])
    assert Q.round_half_away(x).tolist() == [1, -1, 2, -3, 2, -3, 0]


def test_round_div_half_away_hand_values():
    num = torch.tensor([1, -1, 3, -3, 5, -5, 4, 7])
    den = torch.tensor([2, 2, 2, 2, 3, 3, 3, 4])
    # 0.5->1, -0.5->-1, 1.5->2, -1.5->-2, 1.67->2, -1.67->-2, 1.33->1, 1.75->2
    assert Q.round_div_half_away(num, den).tolist() == [1, -1, 2, -2, 2, -2, 1, 2]


# ----------------------------------------------------------------------------- quantizers

def test_act_qparams_hand_values():
    assert Q.choose_act_qparams(0.0, 255.0) == (1.0, -128)  # after ReLU: zp at the bottom
    s, zp = Q.choose_act_qparams(-1.0, 1.0)
    assert s == pytest.approx(2 / 255) and zp == -1  # -128 + 127.5 rounds away from zero
    s, zp = Q.choose_act_qparams(2.0, 5.0)  # widened to include 0
    assert s == pytest.approx(5 / 255) and zp == -128
    s, zp = Q.choose_act_qparams(-4.0, -1.0)
    assert s == pytest.approx(4 / 255) and zp == 127
    assert Q.choose_act_qparams(0.0, 0.0) == (1.0, 0)


@SETTINGS
@given(lo=st.floats(-100, 0), width=st.floats(1e-3, 100))
def test_zero_is_exact_and_range_is_covered(lo, width):
    hi = lo + width
    s, zp = Q.choose_act_qparams(lo, hi)
    assert Q.INT8_MIN <= zp <= Q.INT8_MAX
    assert Q.quantize(torch.tensor([0.0]), s, zp).item() == zp
    assert Q.dequantize(torch.tensor([zp]), s, zp).item() == 0.0
    # the ends of the range are within half a step (plus the zero-point nudge) of a code
    ends = Q.dequantize(Q.quantize(torch.tensor([min(lo, 0.0), max(hi, 0.0)]), s, zp), s, zp)
    assert abs(ends[0].item() - min(lo, 0.0)) <= s * 1.0001
    assert abs(ends[1].item() - max(hi, 0.0)) <= s * 1.0001


@SETTINGS
@given(scale=st.floats(1e-4, 10), zp=st.integers(-128, 127))
def test_codes_round_trip(scale, zp):
    q = torch.arange(-128, 128, dtype=torch.int8)
    assert torch.equal(Q.quantize(Q.dequantize(q, scale, zp), scale, zp), q)


@SETTINGS
@given(scale=st.floats(1e-4, 10), zp=st.integers(-128, 127), seed=st.integers(0, 2 ** 16))
def test_reals_round_trip_within_half_step_and_saturate(scale, zp, seed):
    g = torch.Generator().manual_seed(seed)
    lo, hi = scale * (-128 - zp), scale * (127 - zp)
    x = lo + (hi - lo) * torch.rand(500, generator=g, dtype=torch.float64)
    back = Q.dequantize(Q.quantize(x, scale, zp), scale, zp).to(torch.float64)
    tol = scale / 2 * (1 + 1e-6) + 1e-6 * x.abs()  # float32 output rounding
    assert bool(((back - x).abs() <= tol).all())
    out = torch.tensor([lo - 5 * scale - 1, hi + 5 * scale + 1], dtype=torch.float64)
    assert Q.quantize(out, scale, zp).tolist() == [-128, 127]


@SETTINGS
@given(cout=st.integers(1, 6), k=st.integers(1, 20), seed=st.integers(0, 2 ** 16))
def test_weight_per_channel_symmetric(cout, k, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(cout, k, generator=g) * torch.rand(cout, 1, generator=g) * 3
    w[0] = 0.0  # an all-zero channel must not break anything
    q, s = Q.quantize_weight_per_channel(w)
    assert q.dtype == torch.int8 and int(q.min()) >= -127 and int(q.max()) <= 127
    assert torch.equal(q[0], torch.zeros_like(q[0]))
    for c in range(1, cout):
        if w[c].abs().max() > 0:
            assert int(q[c].abs().max()) == 127  # max |w| maps to the end of the range
    back = Q.dequantize(q, s.reshape(-1, 1), 0).to(torch.float64)
    assert bool(((back - w.double()).abs() <= s.reshape(-1, 1) / 2 * (1 + 1e-6) + 1e-6).all())


def test_bias_scale_is_input_times_weight_scale():
    b = torch.tensor([1.0, -0.3])
    q = Q.quantize_bias(b, 0.1, torch.tensor([0.01, 0.02], dtype=torch.float64))
    assert q.dtype == torch.int32 and q.tolist() == [1000, -150]


# ----------------------------------------------------------------------------- multipliers

def test_quantize_multiplier_hand_values():
    assert Q.quantize_multiplier(0.5) == (1 << 30, 0)
    assert Q.quantize_multiplier(1.0) == (1 << 30, 1)
    assert Q.quantize_multiplier(0.75) == (3 << 29, 0)
    assert Q.quantize_multiplier(0.25) == (1 << 30, -1)
    assert Q.quantize_multiplier(1 - 2 ** -40) == (1 << 30, 1)  # mantissa rounds up to 2^31
    assert Q.quantize_multiplier(0.0) == (0, 0)
    assert Q.quantize_multiplier(2.0 ** -40) == (0, 0)  # flushed: below 2^-31
    with pytest.raises(ValueError):
        Q.quantize_multiplier(-0.1)


@SETTINGS
@given(real=st.floats(2.0 ** -30, 1000.0))
def test_quantize_multiplier_relative_error(real):
    m, shift = Q.quantize_multiplier(real)
    assert (1 << 30) <= m < (1 << 31)
    rep = Fraction(m) * Fraction(2) ** (shift - 31)
    assert abs(rep - Fraction(real)) <= Fraction(real) * Fraction(1, 2 ** 31)


@SETTINGS
@given(a=st.lists(I32, min_size=1, max_size=20), b=I32)
def test_srdhm_matches_gemmlowp_literal(a, b):
    a = a + [Q.INT32_MIN, Q.INT32_MAX, 0, -1, 1]
    got = Q.saturating_rounding_doubling_high_mul(torch.tensor(a), b).tolist()
    assert got == [ref_srdhm(x, b) for x in a]


def test_srdhm_saturation_case():
    out = Q.saturating_rounding_doubling_high_mul(torch.tensor([Q.INT32_MIN]), Q.INT32_MIN)
    assert out.item() == Q.INT32_MAX


@SETTINGS
@given(x=st.lists(I32, min_size=1, max_size=20), e=st.integers(0, 31))
def test_rdbp_matches_gemmlowp_literal(x, e):
    x = x + [Q.INT32_MIN, Q.INT32_MAX, 0, -1, 1, -(1 << max(e - 1, 0)), 1 << max(e - 1, 0)]
    got = Q.rounding_divide_by_pot(torch.tensor(x), e).tolist()
    assert got == [ref_rdbp(v, e) for v in x]


def test_rdbp_per_channel_exponents_with_zero():
    x = torch.tensor([[-3, -3, 5, 6]])
    e = torch.tensor([[0, 1, 2, 2]])
    # -3, round(-1.5)=-2, round(1.25)=1, round(1.5)=2
    assert Q.rounding_divide_by_pot(x, e).tolist() == [[-3, -2, 1, 2]]


def test_requant_documented_tie_case():
    # real 0.5 -> (2^30, 0), no right shift: the doubling high mul rounds ties toward +inf,
    # so -1 * 0.5 = -0.5 gives 0 where exact rounding (away from zero) gives -1: 1 LSB.
    m, s = Q.quantize_multiplier(0.5)
    assert Q.multiply_by_quantized_multiplier(torch.tensor([-1, 1, -3, 3]), m, s).tolist() == [0, 1, -1, 2]
    # with a right shift the tie is rounded by RoundingDivideByPOT: away from zero
    m, s = Q.quantize_multiplier(0.25)
    assert Q.multiply_by_quantized_multiplier(torch.tensor([-2, 2, -6, 6]), m, s).tolist() == [-1, 1, -2, 2]


@settings(max_examples=150, deadline=None)
@given(acc=I32, real=st.floats(2.0 ** -24, 8.0))
def test_requant_vs_exact_rational(acc, real):
    m, shift = Q.quantize_multiplier(real)
    if shift > 0:  # keep the left-shifted value inside int32 (no saturation)
        acc = max(-(2 ** 31 >> shift), min((2 ** 31 >> shift) - 1, acc))
    r = Q.multiply_by_quantized_multiplier(torch.tensor([acc]), m, shift).item()
    rs = max(-shift, 0)
    t = acc * Fraction(m) * Fraction(2) ** (shift - 31)  # exactly what the integers represent
    exact = exact_round_half_away(t)
    assert abs(r - exact) <= 1
    dist_to_tie = abs(abs(t - int(t)) - Fraction(1, 2))
    if dist_to_tie > Fraction(1, 2 ** (rs + 1)):
        assert r == exact
    ideal = acc * Fraction(real)
    assert abs(r - ideal) <= Fraction(1, 2) + Fraction(1, 2 ** (rs + 1)) + abs(ideal) / 2 ** 31


def test_requantize_hand_values_and_clamps():
    m, s = Q.quantize_multiplier(0.01)
    acc = torch.tensor([1000, -1000, 100000, -100000, 149, 150], dtype=torch.int32)
    out = Q.requantize(acc, m, s, zero_point=-128)
    # 10-128, -10-128 -> clamp, saturate high, clamp low, 1.49->1, 1.5->2
    assert out.dtype == torch.int8
    assert out.tolist() == [-118, -128, 127, -128, -127, -126]
    relu = Q.requantize(torch.tensor([-500, 500], dtype=torch.int32), m, s, zero_point=3, qmin=3)
    assert relu.tolist() == [3, 8]


def test_requantize_refuses_non_int32_values():
    with pytest.raises(OverflowError):
        Q.requantize(torch.tensor([2 ** 31], dtype=torch.int64), 1 << 30, 0, 0)


def test_per_channel_requantize_broadcasts():
    m, s = Q.quantize_multipliers(torch.tensor([0.5, 0.125], dtype=torch.float64))
    acc = torch.tensor([[[[8]], [[8]]]], dtype=torch.int32)  # [1, 2, 1, 1]
    out = Q.requantize(acc, m.reshape(1, -1, 1, 1), s.reshape(1, -1, 1, 1), 0)
    assert out.flatten().tolist() == [4, 1]


@settings(max_examples=40, deadline=None)
@given(reals=st.lists(st.floats(2.0 ** -20, 3.0), min_size=1, max_size=4), zp=st.integers(-128, 127),
       seed=st.integers(0, 2 ** 16))
def test_requantize_fused_path_equals_literal_composition(reals, zp, seed):
    reals = reals + [0.5, 0.25]  # shift 0 and shift -1 channels (ties are common there)
    m, s = Q.quantize_multipliers(torch.tensor(reals, dtype=torch.float64))
    g = torch.Generator().manual_seed(seed)
    # accumulators whose results land mostly inside [-140, 140] so the clamp hides nothing
    target = torch.rand(50, len(reals), generator=g, dtype=torch.float64) * 280 - 140
    acc = (target / torch.tensor(reals, dtype=torch.float64)).round().clamp(-2 ** 31, 2 ** 31 - 1).to(torch.int64)
    acc[0] = Q.INT32_MIN
    acc[1] = Q.INT32_MAX
    got = Q.requantize(acc.to(torch.int32), m, s, zp).tolist()
    for i in range(acc.shape[0]):
        for c in range(len(reals)):
            mi, si, a = int(m[c]), int(s[c]), int(acc[i, c])
            if si > 0:
                a = max(Q.INT32_MIN, min(Q.INT32_MAX, a << si))
            want = ref_rdbp(ref_srdhm(a, mi), max(-si, 0)) + zp
            assert got[i][c] == max(-128, min(127, want)), (a, mi, si)
