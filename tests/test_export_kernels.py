"""The C runtime's kernels (host gcc) against the Python fixed-order reference, bit for bit;
the reference against float64 autograd within a stated bound; PCG32; exp/log; packing."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinycl.errors import TinyclError
from tinycl.export import driver as D
from tinycl.export import ref as R
from tinycl.numerics.packing import pack
from tinycl.numerics.quant import multiply_by_quantized_multiplier
from tinycl.numerics.rng import Pcg32

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="host C compiler gcc not found")
U = 2.0 ** -24
SLOW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def exe(tmp_path_factory):
    return D.build_driver(tmp_path_factory.mktemp("driver"))


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    a, b = a.to(torch.float32).contiguous().reshape(-1), b.to(torch.float32).contiguous().reshape(-1)
    return a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


# ----------------------------------------------------------------------------- rng

def test_pcg32_known_answers():
    # pcg32-demo (pcg-random.org): pcg32_srandom_r(&rng, 42u, 54u), first outputs
    r = Pcg32(42, 54)
    assert [r.next_u32() for _ in range(6)] == [0xA15C02B7, 0x7B47F409, 0xBA1D3330, 0x83D2F293, 0xBFA4784B,
                                                0xCBED606E]


def test_pcg32_same_10000_draws_in_c(exe):
    bounds = [1, 7, 1000, 2 ** 31 + 5]
    c = D.call(exe, "rng", [12345, 678, 10000] + bounds, [])[0].view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    r = Pcg32(12345, 678)
    py = [r.below(bounds[i % 4]) for i in range(10000)]
    assert c.tolist() == py
    assert all(0 <= v < bounds[i % 4] for i, v in enumerate(py))


def test_pcg32_bad_bound_and_state():
    with pytest.raises(TinyclError):
        Pcg32().below(0)
    with pytest.raises(TinyclError):
        Pcg32().load_state_dict({"state": 1, "inc": 2})
    a, b = Pcg32(3), Pcg32(9)
    b.load_state_dict(a.state_dict())
    assert [a.next_u32() for _ in range(5)] == [b.next_u32() for _ in range(5)]


def test_below_is_unbiased():
    r = Pcg32(1)
    counts = torch.bincount(torch.tensor([r.below(3) for _ in range(30000)]), minlength=3).double()
    assert float((counts - 10000).abs().max()) < 5 * math.sqrt(30000 * (1 / 3) * (2 / 3))


# ----------------------------------------------------------------------------- exp / log

def test_expf_logf_bit_exact_and_accurate(exe):
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.linspace(-100, 5, 20001), torch.randn(20000, generator=g) * 10,
                   torch.tensor([0.0, -0.0, -87.0, -86.9, 1e-30, 1.0, 2.0, 0.5])]).to(torch.float32)
    ce, cl = D.call(exe, "exp_log", [], [x])
    pe = R.expf(x)
    pos = x > 0
    pl = torch.where(pos, R.logf(torch.where(pos, x, torch.ones_like(x))), torch.zeros_like(x))
    assert same(ce, pe) and same(cl, pl)
    ok = (x > -87) & (x < 80)
    exact = torch.exp(x.double())
    assert float(((pe.double() - exact).abs() / exact)[ok].max()) < 4 * U   # about 2 ulps
    lx = x[x > 1e-30]
    exact = torch.log(lx.double())
    err = (R.logf(lx).double() - exact).abs() / exact.abs().clamp(min=2 ** -20)
    assert float(err.max()) < 8 * U


# ----------------------------------------------------------------------------- conv

conv_cases = st.tuples(st.integers(1, 3), st.sampled_from([(4, 6, 1), (4, 4, 4), (6, 6, 2), (3, 5, 1)]),
                       st.integers(1, 3), st.integers(1, 2), st.integers(0, 1), st.integers(4, 8))


def _conv_case(case, seed):
    n, (cin, cout, groups), k, s, p, h = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cin, h, h + 1, generator=g)
    w = torch.randn(cout, cin // groups, k, k, generator=g)
    b = torch.randn(cout, generator=g)
    return x, w, b, (s, s), (p, p), groups


@SLOW
@given(case=conv_cases, seed=st.integers(0, 10 ** 6))
def test_conv_c_equals_reference(exe, case, seed):
    x, w, b, s, p, groups = _conv_case(case, seed)
    y = R.conv_fwd(x, w, b, s, p, groups)
    G = D.geom(x.shape, w.shape, y.shape, s, p, groups)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed + 1))
    assert same(D.call(exe, "conv_fwd", G, [x, w, b])[0], y)
    assert same(D.call(exe, "conv_bwd_in", G, [dy, w])[0], R.conv_bwd_in(dy, w, x.shape, s, p, groups))
    dw, db = R.conv_bwd_w(dy, x, w.shape, s, p, groups, True)
    cdw, cdb = D.call(exe, "conv_bwd_w", G, [dy, x, w])
    assert same(cdw, dw) and same(cdb, db)


@SLOW
@given(case=conv_cases, seed=st.integers(0, 10 ** 6))
def test_conv_reference_vs_autograd_float64(case, seed):
    """|ref - exact| <= (K + 2) u * conv(|x|, |w|) per output, u = 2^-24, K terms per sum."""
    x, w, b, s, p, groups = _conv_case(case, seed)
    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    y64 = F.conv2d(x64, w64, None, s, p, 1, groups)
    dy = torch.randn(y64.shape, generator=torch.Generator().manual_seed(seed + 1))
    y64.backward(dy.double())
    k = w.shape[1] * w.shape[2] * w.shape[3]
    mag = F.conv2d(x.double().abs(), w.double().abs(), None, s, p, 1, groups)
    assert bool(((R.conv_fwd(x, w, None, s, p, groups).double() - y64.detach()).abs() <= (k + 2) * U * mag).all())
    kin = (w.shape[0] // groups) * w.shape[2] * w.shape[3]
    magx = torch.nn.grad.conv2d_input(x.shape, w.double().abs(), dy.double().abs(), s, p, 1, groups)
    dx = R.conv_bwd_in(dy, w, x.shape, s, p, groups).double()
    assert bool(((dx - x64.grad).abs() <= (kin + 2) * U * magx).all())
    kw_ = x.shape[0] * dy.shape[2] * dy.shape[3]
    magw = torch.nn.grad.conv2d_weight(x.double().abs(), w.shape, dy.double().abs(), s, p, 1, groups)
    dw, _ = R.conv_bwd_w(dy, x, w.shape, s, p, groups, False)
    assert bool(((dw.double() - w64.grad).abs() <= (kw_ + 2) * U * magw).all())


# ----------------------------------------------------------------------------- linear, bn, pools, loss, sgd

def test_linear_c_equals_reference_and_autograd(exe):
    g = torch.Generator().manual_seed(1)
    n, fin, fout = 5, 37, 11
    x, w, b = torch.randn(n, fin, generator=g), torch.randn(fout, fin, generator=g), torch.randn(fout, generator=g)
    dy = torch.randn(n, fout, generator=g)
    ints = [0] * 13 + [n, fout, fin]
    y = R.linear_fwd(x, w, b)
    assert same(D.call(exe, "linear_fwd", ints, [x, w, b])[0], y)
    assert same(D.call(exe, "linear_bwd_in", ints, [dy, w])[0], R.linear_bwd_in(dy, w))
    dw, db = R.linear_bwd_w(dy, x, True)
    cdw, cdb = D.call(exe, "linear_bwd_w", ints, [dy, x])
    assert same(cdw, dw) and same(cdb, db)
    exact = x.double() @ w.double().t() + b.double()
    mag = x.double().abs() @ w.double().abs().t() + b.double().abs()
    assert bool(((y.double() - exact).abs() <= (fin + 2) * U * mag).all())


@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_c_equals_reference_and_autograd(exe, train):
    g = torch.Generator().manual_seed(2)
    n, c, h, w = 3, 5, 4, 3
    x = torch.randn(n, c, h, w, generator=g) * 2 + 1
    gm, bt = torch.randn(c, generator=g), torch.randn(c, generator=g)
    rm, rv = torch.randn(c, generator=g), torch.rand(c, generator=g) + 0.5
    dy = torch.randn(n, c, h, w, generator=g)
    ints = [0] * 13 + [n, c, h * w]
    consts = torch.tensor([1e-5, 1 - 0.1, 0.1])
    if train:
        y, mean, inv, rm2, rv2 = R.bn_train_fwd(x, gm, bt, 1e-5, 0.1, rm, rv)
        outs = D.call(exe, "bn_train_fwd", ints, [x, gm, bt, rm, rv, consts])
        assert all(same(a, b) for a, b in zip(outs, [y, mean, inv, rm2, rv2]))
        dx, dg, db = R.bn_train_bwd(dy, x, gm, mean, inv)
        outs = D.call(exe, "bn_train_bwd", ints, [dy, x, gm, mean, inv])
    else:
        y, inv = R.bn_eval_fwd(x, gm, bt, rm, rv, 1e-5)
        outs = D.call(exe, "bn_eval_fwd", ints, [x, gm, bt, rm, rv, consts])
        assert same(outs[0], y) and same(outs[1], inv)
        dx, dg, db = R.bn_eval_bwd(dy, x, gm, rm, inv)
        outs = D.call(exe, "bn_eval_bwd", ints, [dy, x, gm, rm, inv])
    assert all(same(a, b) for a, b in zip(outs, [dx, dg, db]))
    x64 = x.double().requires_grad_()
    g64, b64 = gm.double().requires_grad_(), bt.double().requires_grad_()
    y64 = F.batch_norm(x64, rm.double().clone(), rv.double().clone(), g64, b64, train, 0.1, 1e-5)
    y64.backward(dy.double())
    for mine, exact in ((y, y64), (dx, x64.grad), (dg, g64.grad), (db, b64.grad)):
        scale = exact.detach().abs().max().clamp(min=1.0)
        assert float((mine.double() - exact.detach()).abs().max() / scale) < 1e-5


@pytest.mark.parametrize("k,s,p", [((2, 2), (2, 2), (0, 0)), ((3, 3), (1, 1), (1, 1)), ((3, 2), (2, 1), (1, 0))])
def test_pools_c_equals_reference_and_autograd(exe, k, s, p):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 7, 6, generator=g)
    x[0, 0, :2, :2] = 1.5  # ties: the first maximum wins
    ym, arg = R.maxpool_fwd(x, k, s, p)
    ya = R.avgpool_fwd(x, k, s, p)
    dy = torch.randn(ym.shape, generator=g)
    G = D.geom(x.shape, (3, 3) + k, ym.shape, s, p, 1)
    G[3] = 3
    assert same(D.call(exe, "maxpool_fwd", G, [x])[0], ym)
    assert same(D.call(exe, "maxpool_bwd", G, [x, dy])[0], R.maxpool_bwd(dy, arg, x.shape))
    assert same(D.call(exe, "avgpool_fwd", G, [x])[0], ya)
    assert same(D.call(exe, "avgpool_bwd", G, [dy])[0], R.avgpool_bwd(dy, x.shape, k, s, p))
    x64 = x.double().requires_grad_()
    F.avg_pool2d(x64, k, s, p).backward(dy.double())
    assert torch.allclose(R.avgpool_bwd(dy, x.shape, k, s, p).double(), x64.grad, rtol=1e-5, atol=1e-6)
    assert torch.allclose(ya.double(), F.avg_pool2d(x.double(), k, s, p), rtol=1e-5, atol=1e-6)
    x64 = x.double().requires_grad_()
    F.max_pool2d(x64, k, s, p).backward(dy.double())
    assert torch.allclose(R.maxpool_bwd(dy, arg, x.shape).double(), x64.grad, rtol=1e-6, atol=1e-7)


def test_gap_loss_sgd_c_equals_reference(exe):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 4, 5, 5, generator=g)
    ints = [0] * 13 + [3, 4, 25]
    y = R.gap_fwd(x)
    assert same(D.call(exe, "gap_fwd", ints, [x])[0], y)
    dy = torch.randn(3, 4, generator=g)
    assert same(D.call(exe, "gap_bwd", ints, [dy])[0], R.gap_bwd(dy, x.shape))
    logits, labels = torch.randn(6, 10, generator=g) * 5, torch.randint(0, 10, (6,), generator=g)
    loss, d = R.softmax_ce(logits, labels)
    closs, cd = D.call(exe, "softmax_ce", [0] * 13 + [6, 10], [logits, labels.float()])
    assert same(closs, loss.reshape(1)) and same(cd, d)
    l64 = logits.double().requires_grad_()
    ref = F.cross_entropy(l64, labels)
    ref.backward()
    assert abs(float(loss) - ref.item()) < 1e-5 * max(1.0, abs(ref.item()))
    assert torch.allclose(d.double(), l64.grad, rtol=1e-5, atol=1e-7)
    p, buf, gr = (torch.randn(50, generator=g) for _ in range(3))
    np_, nb = R.sgd(p, buf, gr, 0.05, 0.9, 5e-4)
    cp, cb = D.call(exe, "sgd", [], [p, buf, gr, torch.tensor([0.05, 0.9, 5e-4])])
    assert same(cp, np_) and same(cb, nb)


def test_sgd_zero_buffer_first_step_matches_torch():
    """A zero momentum buffer makes the first step torch's ``buf = g`` exactly."""
    g = torch.Generator().manual_seed(5)
    p0, gr = torch.randn(20, generator=g), torch.randn(20, generator=g)
    p, buf = R.sgd(p0.clone(), torch.zeros(20), gr, 0.1, 0.9, 0.0)
    assert torch.equal(buf, gr)
    t = p0.clone().requires_grad_()
    opt = torch.optim.SGD([t], lr=0.1, momentum=0.9)
    t.grad = gr.clone()
    opt.step()
    assert torch.allclose(p, t.detach(), rtol=0, atol=1e-7)


@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_c_equals_numerics_packing(exe, bits):
    g = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 1 << bits, (77,), generator=g)
    c = D.call(exe, "pack", [bits], [codes.float()])[0].to(torch.uint8)
    assert torch.equal(c, pack(codes, bits))


def test_fixed_point_requant_c_equals_numerics_quant(exe):
    """TFLite MultiplyByQuantizedMultiplier: positive and negative shifts, saturation, ties."""
    g = torch.Generator().manual_seed(6)
    n = 5000
    x = torch.randint(-2 ** 31, 2 ** 31, (n,), generator=g, dtype=torch.int64)
    x[:8] = torch.tensor([-2 ** 31, 2 ** 31 - 1, 0, 1, -1, 2 ** 30, -(2 ** 30), 3])
    m = torch.randint(2 ** 30, 2 ** 31, (n,), generator=g, dtype=torch.int64)
    m[:2] = 2 ** 31 - 1
    s = torch.randint(-31, 8, (n,), generator=g, dtype=torch.int64)
    c = D.call(exe, "mbqm", [], [x.to(torch.int32), m.to(torch.int32), s.to(torch.int32)])[0].view(torch.int32)
    assert torch.equal(c.to(torch.int64), multiply_by_quantized_multiplier(x, m, s))
