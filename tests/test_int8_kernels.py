"""Integer kernels bit-exact against plain integer references (python loops / int64 ops)."""

from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings, strategies as st

from tinycl.kernels import int8 as K
from tinycl.numerics import quant as Q

SETTINGS = settings(max_examples=40, deadline=None)


def rand_codes(g, shape, lo=-128, hi=127):
    return torch.randint(lo, hi + 1, shape, generator=g, dtype=torch.int64).to(torch.int8)


def ref_conv(x, zp, w, bias, stride, pad, groups):
    """INT64 reference: per kernel tap, shifted slices times weights, summed (no floats)."""
    n, cin, h, wd = x.shape
    cout, cpg, kh, kw = w.shape
    xs = x.to(torch.int64) - zp
    xp = torch.zeros(n, cin, h + 2 * pad, wd + 2 * pad, dtype=torch.int64)  # padding = real 0
    xp[:, :, pad:pad + h, pad:pad + wd] = xs
    ho = (h + 2 * pad - kh) // stride + 1
    wo = (wd + 2 * pad - kw) // stride + 1
    out = torch.zeros(n, cout, ho, wo, dtype=torch.int64)
    opg = cout // groups
    wl = w.to(torch.int64)
    for co in range(cout):
        gi = co // opg
        for ci in range(cpg):
            for i in range(kh):
                for j in range(kw):
                    patch = xp[:, gi * cpg + ci, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
                    out[:, co] += patch * wl[co, ci, i, j]
    if bias is not None:
        out += bias.to(torch.int64).reshape(1, -1, 1, 1)
    return out


def round_half_away_frac(f: Fraction) -> int:
    s = -1 if f < 0 else 1
    a = abs(f)
    return s * ((2 * a.numerator + a.denominator) // (2 * a.denominator))


@SETTINGS
@given(n=st.integers(1, 2), cin=st.integers(1, 4), mult=st.integers(1, 3), h=st.integers(1, 9),
       w=st.integers(1, 9), k=st.integers(1, 3), stride=st.sampled_from([1, 2]), pad=st.integers(0, 2),
       mode=st.sampled_from(["dense", "depthwise", "grouped"]), zp=st.integers(-128, 127),
       bias=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_conv2d_bit_exact(n, cin, mult, h, w, k, stride, pad, mode, zp, bias, seed):
    if h + 2 * pad < k or w + 2 * pad < k:
        return
    g = torch.Generator().manual_seed(seed)
    if mode == "dense":
        groups, cout = 1, mult + 1
    elif mode == "depthwise":
        groups, cout = cin, cin * mult
    else:
        cin, groups, cout = 2 * cin, 2, 2 * mult
    x = rand_codes(g, (n, cin, h, w))
    wq = rand_codes(g, (cout, cin // groups, k, k), -127, 127)
    b = torch.randint(-2 ** 20, 2 ** 20, (cout,), generator=g, dtype=torch.int32) if bias else None
    got = K.conv2d_acc(x, zp, wq, b, stride=stride, padding=pad, groups=groups)
    assert got.dtype == torch.int32
    assert torch.equal(got.to(torch.int64), ref_conv(x, zp, wq, b, stride, pad, groups))


def test_conv2d_worst_case_accumulator_exact():
    # every product is 255 * 127 (or -255 * 127): acc = K * 32385 with K = 64 * 3 * 3
    x = torch.full((1, 64, 3, 3), -128, dtype=torch.int8)
    w = torch.full((2, 64, 3, 3), -127, dtype=torch.int8)
    w[1] = 127
    got = K.conv2d_acc(x, 127, w)
    assert got.flatten().tolist() == [576 * 255 * 127, -576 * 255 * 127]


def test_conv2d_int32_overflow_is_detected():
    cin = 70000  # 70000 * 255 * 127 > 2^31
    x = torch.full((1, cin, 1, 1), 127, dtype=torch.int8)
    w = torch.full((1, cin, 1, 1), 127, dtype=torch.int8)
    with pytest.raises(OverflowError):
        K.conv2d_acc(x, -128, w)


@SETTINGS
@given(n=st.integers(1, 5), fin=st.integers(1, 40), fout=st.integers(1, 7), zp=st.integers(-128, 127),
       seed=st.integers(0, 2 ** 16))
def test_linear_bit_exact(n, fin, fout, zp, seed):
    g = torch.Generator().manual_seed(seed)
    x = rand_codes(g, (n, fin))
    w = rand_codes(g, (fout, fin), -127, 127)
    b = torch.randint(-2 ** 24, 2 ** 24, (fout,), generator=g, dtype=torch.int32)
    ref = [[sum((int(x[i, f]) - zp) * int(w[o, f]) for f in range(fin)) + int(b[o]) for o in range(fout)]
           for i in range(n)]
    assert K.linear_acc(x, zp, w, b).tolist() == ref


def test_relu_and_relu6_on_codes():
    q = torch.tensor([-128, -5, 0, 3, 60, 127], dtype=torch.int8)
    assert K.relu_int(q, -5).tolist() == [-5, -5, 0, 3, 60, 127]
    # scale 0.1, zp 0: 6.0 is code 60
    assert K.relu6_int(q, 0, 0.1).tolist() == [0, 0, 0, 3, 60, 60]
    # 6 / 0.01 = 600 codes above zp: saturates at 127
    assert K.relu6_int(q, -5, 0.01).tolist() == [-5, -5, 0, 3, 60, 127]


@SETTINGS
@given(h=st.integers(1, 8), w=st.integers(1, 8), k=st.integers(1, 3), stride=st.integers(1, 3),
       pad=st.integers(0, 1), seed=st.integers(0, 2 ** 16))
def test_maxpool_matches_loop(h, w, k, stride, pad, seed):
    if pad * 2 > k or h + 2 * pad < k or w + 2 * pad < k:
        return
    g = torch.Generator().manual_seed(seed)
    x = rand_codes(g, (2, 3, h, w))
    got = K.maxpool2d_int8(x, k, stride, pad)
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    assert got.shape == (2, 3, ho, wo) and got.dtype == torch.int8
    for n in range(2):
        for c in range(3):
            for i in range(ho):
                for j in range(wo):
                    vals = [int(x[n, c, r, s]) for r in range(i * stride - pad, i * stride - pad + k)
                            for s in range(j * stride - pad, j * stride - pad + k) if 0 <= r < h and 0 <= s < w]
                    assert int(got[n, c, i, j]) == max(vals)


@SETTINGS
@given(h=st.integers(1, 8), w=st.integers(1, 8), k=st.integers(1, 3), stride=st.integers(1, 3),
       pad=st.integers(0, 1), include=st.booleans(), zp=st.integers(-128, 127), seed=st.integers(0, 2 ** 16))
def test_avgpool_matches_rational_rounding(h, w, k, stride, pad, include, zp, seed):
    if pad * 2 > k or h + 2 * pad < k or w + 2 * pad < k:
        return
    g = torch.Generator().manual_seed(seed)
    x = rand_codes(g, (1, 2, h, w))
    got = K.avgpool2d_int8(x, zp, k, stride, pad, count_include_pad=include)
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    assert got.shape == (1, 2, ho, wo)
    for c in range(2):
        for i in range(ho):
            for j in range(wo):
                vals = [int(x[0, c, r, s]) - zp for r in range(i * stride - pad, i * stride - pad + k)
                        for s in range(j * stride - pad, j * stride - pad + k) if 0 <= r < h and 0 <= s < w]
                count = k * k if include else len(vals)
                want = max(-128, min(127, round_half_away_frac(Fraction(sum(vals), count)) + zp))
                assert int(got[0, c, i, j]) == want


def test_avgpool_rounding_hand_values():
    # zp 0: window sums 1, -1, 2, -2 over 2x... use 1x2 windows: means 0.5, -0.5, 1.0, -1.5
    x = torch.tensor([[[[1, 0, -1, 0, 1, 1, -1, -2]]]], dtype=torch.int8)
    assert K.avgpool2d_int8(x, 0, (1, 2)).flatten().tolist() == [1, -1, 1, -2]
    # zero point 10: codes 11, 10 -> real 1, 0 -> mean 0.5 -> 1 -> code 11
    assert K.avgpool2d_int8(torch.tensor([[[[11, 10]]]], dtype=torch.int8), 10, (1, 2)).item() == 11


@SETTINGS
@given(h=st.integers(1, 7), w=st.integers(1, 7), zp=st.integers(-128, 127), seed=st.integers(0, 2 ** 16))
def test_global_avgpool_matches_rational_rounding(h, w, zp, seed):
    g = torch.Generator().manual_seed(seed)
    x = rand_codes(g, (2, 3, h, w))
    got = K.global_avgpool_int8(x, zp)
    assert got.shape == (2, 3, 1, 1)
    for n in range(2):
        for c in range(3):
            s = sum(int(v) - zp for v in x[n, c].flatten().tolist())
            want = max(-128, min(127, round_half_away_frac(Fraction(s, h * w)) + zp))
            assert int(got[n, c, 0, 0]) == want


@SETTINGS
@given(sa=st.floats(1e-3, 1.0), sb=st.floats(1e-3, 1.0), so=st.floats(2e-3, 2.0), za=st.integers(-128, 127),
       zb=st.integers(-128, 127), zo=st.integers(-128, 127), seed=st.integers(0, 2 ** 16))
def test_add_within_one_lsb_of_exact(sa, sb, so, za, zb, zo, seed):
    g = torch.Generator().manual_seed(seed)
    a, b = rand_codes(g, (200,)), rand_codes(g, (200,))
    p = Q.add_params(sa, sb, so)
    got = K.add_int8(a, za, b, zb, p, zo)
    for i in range(200):
        real = Fraction(sa) * (int(a[i]) - za) + Fraction(sb) * (int(b[i]) - zb)
        want = max(-128, min(127, round_half_away_frac(real / Fraction(so)) + zo))
        assert abs(int(got[i]) - want) <= 1


def test_add_hand_value():
    # equal scales 0.1, out scale 0.2: (3 + 5) * 0.1 / 0.2 = 4 -> code 4 + 1
    p = Q.add_params(0.1, 0.1, 0.2)
    out = K.add_int8(torch.tensor([3], dtype=torch.int8), 0, torch.tensor([7], dtype=torch.int8), 2, p, 1)
    assert out.item() == 5


@pytest.mark.parametrize("cin, k", [(3, 3), (64, 3), (600, 3), (5000, 1)])
def test_conv2d_each_exact_sum_path(cin, k):
    # K = cin*k*k: 27 (float32), 576 (float32, split weights), 5400 and 5000 (float64)
    g = torch.Generator().manual_seed(cin)
    x = rand_codes(g, (1, cin, 4, 4))
    w = rand_codes(g, (2, cin, k, k), -127, 127)
    w[0].fill_(-127)
    x[0, :, :2].fill_(-128)  # some windows with every product at the worst case
    got = K.conv2d_acc(x, 127, w, padding=1)
    assert torch.equal(got.to(torch.int64), ref_conv(x, 127, w, None, 1, 1, 1))


def test_reduced_float32_precision_setting_keeps_exactness():
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")  # allows bf16/tf32 internally
        assert not K._fp32_is_ieee()
        g = torch.Generator().manual_seed(1)
        x, w = rand_codes(g, (1, 8, 5, 5)), rand_codes(g, (4, 8, 3, 3), -127, 127)
        assert torch.equal(K.conv2d_acc(x, -3, w).to(torch.int64), ref_conv(x, -3, w, None, 1, 0, 1))
    finally:
        torch.set_float32_matmul_precision(old)


def test_linear_large_fan_in_exact():
    g = torch.Generator().manual_seed(2)
    x, w = rand_codes(g, (3, 3000)), rand_codes(g, (5, 3000), -127, 127)
    want = (x.to(torch.int64) + 100) @ w.to(torch.int64).t()
    assert torch.equal(K.linear_acc(x, -100, w).to(torch.int64), want)


def test_fused_conv_and_linear_requant_equal_two_steps():
    g = torch.Generator().manual_seed(4)
    x, w = rand_codes(g, (2, 4, 6, 6)), rand_codes(g, (3, 4, 3, 3), -127, 127)
    b = torch.randint(-5000, 5000, (3,), generator=g, dtype=torch.int32)
    m, s = Q.quantize_multipliers(torch.tensor([0.001, 0.004, 0.02], dtype=torch.float64))
    fused = K.conv2d_int8(x, 5, w, b, m, s, -7, -7, 127, stride=2, padding=1)
    two = Q.requantize(K.conv2d_acc(x, 5, w, b, 2, 1), m.reshape(1, -1, 1, 1), s.reshape(1, -1, 1, 1), -7, -7, 127)
    assert torch.equal(fused, two) and fused.dtype == torch.int8
    xl, wl = rand_codes(g, (5, 10)), rand_codes(g, (3, 10), -127, 127)
    fused = K.linear_int8(xl, 2, wl, b, m, s, 1)
    two = Q.requantize(K.linear_acc(xl, 2, wl, b), m.reshape(1, -1), s.reshape(1, -1), 1)
    assert torch.equal(fused, two)


def lit_mbqm(x: int, m: int, shift: int) -> int:
    """TFLite MultiplyByQuantizedMultiplier with python ints, C truncating division."""
    x = max(Q.INT32_MIN, min(Q.INT32_MAX, x << max(shift, 0)))
    ab = x * m
    t = ab + (1 << 30) if ab >= 0 else ab + 1 - (1 << 30)
    hi = abs(t) // (1 << 31) * (1 if t >= 0 else -1)
    e = max(-shift, 0)
    mask = (1 << e) - 1
    return (hi >> e) + (1 if (hi & mask) > (mask >> 1) + (1 if hi < 0 else 0) else 0)


@settings(max_examples=25, deadline=None)
@given(sa=st.floats(1e-3, 1.0), sb=st.floats(1e-3, 1.0), so=st.floats(2e-3, 2.0), za=st.integers(-128, 127),
       zb=st.integers(-128, 127), zo=st.integers(-128, 127), seed=st.integers(0, 2 ** 16))
def test_add_bit_exact_vs_literal_tflite_add(sa, sb, so, za, zb, zo, seed):
    g = torch.Generator().manual_seed(seed)
    a, b = rand_codes(g, (100,)), rand_codes(g, (100,))
    p = Q.add_params(sa, sb, so)
    got = K.add_int8(a, za, b, zb, p, zo, qmin=-100, qmax=120).tolist()
    for i in range(100):
        a2 = lit_mbqm((int(a[i]) - za) << p["left_shift"], p["a_mult"], p["a_shift"])
        b2 = lit_mbqm((int(b[i]) - zb) << p["left_shift"], p["b_mult"], p["b_shift"])
        want = max(-100, min(120, lit_mbqm(a2 + b2, p["out_mult"], p["out_shift"]) + zo))
        assert got[i] == want
