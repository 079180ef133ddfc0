"""Formats, rounding, native accumulation, precision error bounds, loss scaling."""

from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from tinycl.errors import TinyclError
from tinycl.kernels.conv import conv2d_forward
from tinycl.kernels.matmul import matmul_native
from tinycl.numerics.formats import round_to, stochastic_round, unit_roundoff
from tinycl.numerics.lossscale import LossScaler
from tinycl.numerics.precision import get_precision

PBITS = {"fp16": (11, -14, 15), "bf16": (8, -126, 127)}  # significand bits, emin, emax


def exact_round(q: Fraction, fmt: str) -> Fraction:
    """Correctly round a rational to ``fmt`` (ties to even), from first principles."""
    p, emin, emax = PBITS[fmt]
    if q == 0:
        return Fraction(0)
    sign, a = (1 if q > 0 else -1), abs(q)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    e = max(e, emin)  # subnormals share emin's quantum
    quantum = Fraction(2) ** (e - p + 1)
    m = a / quantum
    lo = m.numerator // m.denominator
    r = m - lo
    if r > Fraction(1, 2) or (r == Fraction(1, 2) and lo % 2 == 1):
        lo += 1
    val = lo * quantum
    if val > (2 - Fraction(2) ** (1 - p)) * Fraction(2) ** emax:
        return Fraction(10**400) * sign  # overflow marker
    return sign * val


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_round_to_is_correct_rounding(fmt):
    g = torch.Generator().manual_seed(0)
    # regression: sums just above a midpoint that float32 rounds onto it (double rounding)
    tricky = [1 + 2.0 ** -11 + 2.0 ** -40, 1 + 2.0 ** -8 + 2.0 ** -40, -(1 + 2.0 ** -11 + 2.0 ** -40),
              -0.527587900128367, 2.0 ** -24 * 1.5, 1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11]
    x = torch.cat([torch.randn(20000, dtype=torch.float64, generator=g)
                   * 10.0 ** torch.randint(-6, 4, (20000,), generator=g),
                   torch.tensor(tricky, dtype=torch.float64)])
    r = round_to(x, fmt)
    for xi, ri in zip(x.tolist(), r.tolist()):
        assert Fraction(ri) == exact_round(Fraction(xi), fmt), (xi, ri)


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_stochastic_round_neighbours_and_unbiased(fmt):
    x = torch.full((200000,), 1.0 + 1.0 / 3.0 * 2.0 ** -7, dtype=torch.float32)
    r = stochastic_round(x, fmt, torch.Generator().manual_seed(0))
    vals = r.unique()
    assert len(vals) == 2  # only the two neighbours
    assert abs(r.double().mean().item() - x[0].item()) < 3e-5
    exact = round_to(torch.randn(100), fmt)
    assert torch.equal(stochastic_round(exact, fmt), exact)


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
@given(st.integers(1, 4), st.integers(1, 12), st.integers(1, 4), st.integers(0, 2**31))
def test_native_matmul_bit_exact_vs_scalar_reference(fmt, m, k, n, seed):
    g = torch.Generator().manual_seed(seed)
    a = round_to(torch.randn(m, k, generator=g, dtype=torch.float64) * 4, fmt)
    b = round_to(torch.randn(k, n, generator=g, dtype=torch.float64) * 4, fmt)
    got = matmul_native(a, b, fmt)
    for i in range(m):
        for j in range(n):
            acc = Fraction(0)
            for t in range(k):  # one fused multiply-add, exactly rounded, per MAC
                acc = exact_round(acc + Fraction(a[i, t].item()) * Fraction(b[t, j].item()), fmt)
            assert Fraction(got[i, j].item()) == acc


def test_native_matmul_regression_double_rounding():
    a = torch.tensor([[1.0, 1.01953125]], dtype=torch.float64)
    b = torch.tensor([[1.0], [2009 * 2.0 ** -22]], dtype=torch.float64)
    assert matmul_native(a, b, "fp16").item() == 1.0009765625  # the correctly rounded FMA chain


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
@pytest.mark.parametrize("accumulate", ["fp32", "native"])
def test_low_precision_conv_within_derived_bound(fmt, accumulate):
    """|y_hat - y| <= (3u + K*u_acc) * conv(|x|, |w|): two input roundings, one output
    rounding, and K accumulation roundings (u_acc = 2^-24 for FP32 sums, u for native)."""
    prec = get_precision(fmt, accumulate=accumulate)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    ref = F.conv2d(x, w, padding=1)
    absref = F.conv2d(x.abs(), w.abs(), padding=1)
    xq, wq = prec.act(x.float()), prec.weight(w.float())
    y = prec.act(conv2d_forward(xq, wq, None, 1, 1, 1, acc=prec.native)).double()
    u = unit_roundoff(fmt)
    k_red = 27
    u_acc = u if accumulate == "native" else 2.0 ** -24
    bound = (3 * u + k_red * u_acc * 1.01) * absref + 1e-30
    assert ((y - ref).abs() <= bound).all()
    # and the error is real: low precision is not secretly FP32
    assert (y - ref).abs().max() > 2.0 ** -24 * absref.max()


def test_precision_policies():
    assert get_precision("fp32").is_fp32
    p = get_precision("fp16", accumulate="native")
    assert p.native == "fp16" and p.bytes_per("weights") == 2
    with pytest.raises(TinyclError, match="unknown precision"):
        get_precision("fp8")
    with pytest.raises(TinyclError, match="accumulate"):
        get_precision("fp16", accumulate="fp64")


def test_dynamic_loss_scaler():
    s = LossScaler(scale=1024.0, dynamic=True, growth_interval=2)
    assert s.update(True) is False and s.scale == 512.0
    assert s.update(False) and s.update(False) and s.scale == 1024.0
    st_ = LossScaler(scale=8.0, dynamic=False)
    assert st_.update(True) is False and st_.scale == 8.0
