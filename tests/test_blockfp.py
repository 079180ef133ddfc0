"""int8bfp format and the int8 policy, against scalar references built from Python Fractions and ints."""

from fractions import Fraction
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from tinycl.numerics import blockfp as B
from tinycl.numerics.formats import BYTES, round_to, stochastic_round
from tinycl.numerics.precision import get_precision
from tinycl.models.convert import from_torch


# ---- scalar references ---------------------------------------------------------------------
def ref_exponent(values):
    """Smallest integer e with max|v| <= 127 * 2**e, by search over exact fractions."""
    amax = max(abs(Fraction(v)) for v in values)
    if amax == 0:
        return None
    e = 0
    while amax > 127 * Fraction(2) ** e:
        e += 1
    while amax <= 127 * Fraction(2) ** (e - 1):
        e -= 1
    return e


def ref_round(values):
    e = ref_exponent(values)
    if e is None:
        return [0.0] * len(values)
    s = Fraction(2) ** e
    return [float(max(-127, min(127, round(Fraction(v) / s))) * s) for v in values]  # round(): half to even


def ref_stochastic(values, us):
    e = ref_exponent(values)
    s = Fraction(2) ** e
    return [float(max(-127, min(127, math.floor(Fraction(v) / s + Fraction(u)))) * s) for v, u in zip(values, us)]


# ---- format ----------------------------------------------------------------------------------
def test_exponent_hand_worked():
    # max 127 fits 127 * 2**0; 127.5 needs 2**1; 1.0 -> 127 * 2**-7 = 0.99 < 1, so e = -6
    assert B.shared_exponent(torch.tensor([127.0, -3.0])) == 0
    assert B.shared_exponent(torch.tensor([127.5])) == 1
    assert B.shared_exponent(torch.tensor([1.0])) == -6
    assert B.shared_exponent(torch.tensor([127 / 128])) == -7
    assert B.shared_exponent(torch.zeros(3)) is None


def test_round_hand_worked_ties_to_even():
    # max 127 -> scale 1: 2.5 -> 2, 3.5 -> 4, -0.5 -> -0
    x = torch.tensor([127.0, 2.5, 3.5, -0.5, 1.49], dtype=torch.float64)
    assert B.round_int8bfp(x).tolist() == [127.0, 2.0, 4.0, -0.0, 1.0]
    # max 254 -> scale 2: 3/2 = 1.5 -> 2 (even) -> 4; 5/2 = 2.5 -> 2 (even) -> 4
    y = torch.tensor([254.0, 3.0, 5.0], dtype=torch.float64)
    assert B.round_int8bfp(y).tolist() == [254.0, 4.0, 4.0]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=1, max_size=40))
def test_round_matches_scalar_reference(vals):
    x = torch.tensor(vals, dtype=torch.float64)
    assert B.round_int8bfp(x).tolist() == ref_round(vals)
    x32 = torch.tensor(vals, dtype=torch.float32)
    assert B.round_int8bfp(x32).tolist() == [float(torch.tensor(v, dtype=torch.float32)) for v in ref_round(
        [float(v) for v in x32.tolist()])]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-100, 100, allow_nan=False), min_size=1, max_size=30), st.integers(0, 2**31))
def test_stochastic_matches_scalar_reference(vals, seed):
    x = torch.tensor(vals, dtype=torch.float64)
    if not (x != 0).any():
        assert B.stochastic_int8bfp(x).tolist() == [0.0] * len(vals)
        return
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert B.stochastic_int8bfp(x, u=u).tolist() == ref_stochastic(vals, u.tolist())


def test_stochastic_is_unbiased_and_neighbouring():
    g = torch.Generator().manual_seed(0)
    x = torch.tensor([127.0, 0.3, -2.75, 10.5], dtype=torch.float64)
    draws = torch.stack([stochastic_round(x, "int8bfp", g) for _ in range(4000)])
    # always one of the two neighbours on the grid of step 1
    assert torch.all((draws == torch.floor(x)) | (draws == torch.ceil(x)))
    # mean within 4 standard errors (p(1-p)/n <= 1/(4n))
    assert torch.all((draws.mean(0) - x).abs() < 4 * 0.5 / math.sqrt(4000))


def test_values_on_grid_and_idempotent():
    x = torch.randn(5, 7, dtype=torch.float64) * 3
    r = round_to(x, "int8bfp")
    q, e = B.to_int8(r)
    assert q.dtype == torch.int8 and q.abs().max() <= 127
    assert torch.equal(q.double() * 2.0 ** e, r)
    assert torch.equal(round_to(r, "int8bfp"), r)
    step = 2.0 ** e
    assert (r - x).abs().max() <= step / 2


def test_zero_and_nonfinite():
    assert torch.equal(B.round_int8bfp(torch.zeros(4)), torch.zeros(4))
    x = torch.tensor([1.0, float("nan")])
    assert torch.isnan(B.round_int8bfp(x)[1])
    with pytest.raises(ValueError):
        B.to_int8(torch.tensor([0.3, 127.0 * 0.3 + 0.01]))


def test_policy_registered():
    p = get_precision("int8")
    assert (p.weights, p.activations, p.gradients) == ("int8bfp",) * 3
    assert p.master_weights and p.stochastic and BYTES["int8bfp"] == 1
    assert p.bytes_per("activations") == 1


# ---- accumulation: int32 semantics ----------------------------------------------------------
def test_float32_accumulation_exact_up_to_bound():
    # worst case: all products 127*127; K = 1040 gives 16,774,160 < 2**24 (exact), K = 1041 does not fit
    assert 1040 * 127 * 127 < 2**24 < 1041 * 127 * 127
    g = torch.Generator().manual_seed(1)
    a = torch.randint(-127, 128, (8, 1040), generator=g)
    b = torch.randint(-127, 128, (1040, 6), generator=g)
    a[0], b[:, 0] = 127, 127
    exact = a.long() @ b.long()
    assert torch.equal((a.float() @ b.float()).long(), exact)
    assert torch.equal((a.double() @ b.double()).long(), exact)


def _ref_conv_int(xq, wq, stride, pad):
    n, cin, h, w = xq.shape
    cout, _, kh, kw = wq.shape
    ho, wo = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    out = [[[[0] * wo for _ in range(ho)] for _ in range(cout)] for _ in range(n)]
    X, W = xq.tolist(), wq.tolist()
    for i in range(n):
        for o in range(cout):
            for r in range(ho):
                for c in range(wo):
                    acc = 0
                    for ci in range(cin):
                        for a in range(kh):
                            for bb in range(kw):
                                y, x = r * stride + a - pad, c * stride + bb - pad
                                if 0 <= y < h and 0 <= x < w:
                                    acc += X[i][ci][y][x] * W[o][ci][a][bb]
                    out[i][o][r][c] = acc
    return out


@settings(max_examples=8, deadline=None)
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 4), st.integers(3, 6), st.sampled_from([1, 2]),
       st.integers(0, 1), st.integers(0, 999))
def test_int8_conv_forward_bit_exact_vs_integer_reference(n, cin, cout, hw, stride, pad, seed):
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, 3 if hw >= 3 else 1, stride, pad, bias=False).double()
    net = from_torch(conv, (cin, hw, hw), precision="int8").eval()
    x = torch.randn(n, cin, hw, hw, dtype=torch.float64)
    y = net.forward(x)
    xq, ex = B.to_int8(round_to(x, "int8bfp"))
    wq, ew = B.to_int8(round_to(conv.weight.detach(), "int8bfp"))
    acc = _ref_conv_int(xq.long(), wq.long(), stride, pad)
    flat = [v for a in acc for b in a for c in b for v in c]
    s = Fraction(2) ** (ex + ew)
    ref = ref_round([Fraction(v) * s for v in flat])
    assert y.flatten().tolist() == ref


def test_int8_linear_gradients_bit_exact_vs_reference():
    torch.manual_seed(3)
    lin = nn.Linear(9, 4, bias=False).double()
    net = from_torch(lin, (9,), precision=get_precision("int8", stochastic=False))
    x = torch.randn(5, 9, dtype=torch.float64)
    net.forward(x)
    dy = torch.randn(5, 4, dtype=torch.float64)
    dx = net.backward(dy)
    xq, ex = B.to_int8(round_to(x, "int8bfp"))
    dq, ed = B.to_int8(round_to(dy, "int8bfp"))
    wq, ew = B.to_int8(round_to(lin.weight.detach(), "int8bfp"))
    X, D, W = xq.tolist(), dq.tolist(), wq.tolist()
    dw = [Fraction(sum(D[i][o] * X[i][k] for i in range(5))) * Fraction(2) ** (ed + ex)
          for o in range(4) for k in range(9)]
    assert net.named_grads()["weight"].flatten().tolist() == ref_round(dw)
    dxr = [Fraction(sum(D[i][o] * W[o][k] for o in range(4))) * Fraction(2) ** (ed + ew)
           for i in range(5) for k in range(9)]
    assert dx.flatten().tolist() == ref_round(dxr)


def test_int8_policy_trains_a_small_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    w_true = torch.randn(8, 3, generator=g)
    y = (x @ w_true).argmax(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    net = from_torch(model, (8,), precision="int8")
    net.generator = torch.Generator().manual_seed(1)
    from tinycl.kernels.optim import SGD
    opt = SGD(lr=0.1, momentum=0.9)
    for _ in range(40):
        for i in range(0, 256, 32):
            net.train_step(x[i:i + 32], y[i:i + 32], opt)
    acc = (net.predict(x).argmax(1) == y).float().mean().item()
    assert acc > 0.9
