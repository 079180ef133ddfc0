"""The runtime's kernels built for ``_Float16`` tensors (``TC_FP16``) against the fixed-order
reference: FP16 inputs, float arithmetic, each result rounded once to FP16, bit for bit; and
against float64 autograd within the float32 summation bound plus one FP16 rounding."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinycl.export import driver as D
from tinycl.export import ref as R

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="host C compiler gcc not found")
U, U16 = 2.0 ** -24, 2.0 ** -11
SLOW = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def exe16(tmp_path_factory):
    return D.build_driver(tmp_path_factory.mktemp("driver16"), fp16=True)


def h(t: torch.Tensor) -> torch.Tensor:
    """float32 rounded to FP16 (ties to even), kept in float32."""
    return t.to(torch.float16).to(torch.float32)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    a, b = a.to(torch.float32).contiguous().reshape(-1), b.to(torch.float32).contiguous().reshape(-1)
    return a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


def within(c: torch.Tensor, exact: torch.Tensor, k: int, mag: torch.Tensor) -> bool:
    """|c - exact| <= (k + 2) u mag (float32 sum of k terms) + one FP16 rounding (2^-11 relative,
    2^-25 absolute for FP16 subnormals)."""
    c, exact, mag = c.double().reshape(exact.shape), exact.double(), mag.double()
    return bool(((c - exact).abs() <= (k + 2) * U * mag * (1 + U16) + U16 * exact.abs() + 2.0 ** -25).all())


conv_cases = st.tuples(st.integers(1, 3), st.sampled_from([(4, 6, 1), (4, 4, 4), (6, 6, 2), (3, 5, 1)]),
                       st.integers(1, 3), st.integers(1, 2), st.integers(0, 1), st.integers(4, 8))


@SLOW
@given(case=conv_cases, seed=st.integers(0, 10 ** 6))
def test_fp16_conv_c_equals_reference_and_autograd(exe16, case, seed):
    n, (cin, cout, groups), k, s, p, hh = case
    s, p = (s, s), (p, p)
    g = torch.Generator().manual_seed(seed)
    x, w = h(torch.randn(n, cin, hh, hh + 1, generator=g)), h(torch.randn(cout, cin // groups, k, k, generator=g))
    b = h(torch.randn(cout, generator=g))
    y = R.conv_fwd(x, w, b, s, p, groups)
    dy = h(torch.randn(y.shape, generator=g))
    G = D.geom(x.shape, w.shape, y.shape, s, p, groups)
    cy = D.call(exe16, "conv_fwd", G, [x, w, b])[0]
    assert same(cy, h(y))
    cdx = D.call(exe16, "conv_bwd_in", G, [dy, w])[0]
    assert same(cdx, h(R.conv_bwd_in(dy, w, x.shape, s, p, groups)))
    dw, db = R.conv_bwd_w(dy, x, w.shape, s, p, groups, True)
    cdw, cdb = D.call(exe16, "conv_bwd_w", G, [dy, x, w])
    assert same(cdw, h(dw)) and same(cdb, h(db))
    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    y64 = F.conv2d(x64, w64, None, s, p, 1, groups)
    y64.backward(dy.double())
    kk = w.shape[1] * w.shape[2] * w.shape[3]
    mag = F.conv2d(x.double().abs(), w.double().abs(), b.double().abs(), s, p, 1, groups)
    assert within(cy, y64.detach() + b.double().view(1, -1, 1, 1), kk + 1, mag)
    kin = (cout // groups) * k * k
    assert within(cdx, x64.grad, kin, torch.nn.grad.conv2d_input(x.shape, w.double().abs(), dy.double().abs(), s, p,
                                                                  1, groups))
    kw_ = n * dy.shape[2] * dy.shape[3]
    assert within(cdw, w64.grad, kw_, torch.nn.grad.conv2d_weight(x.double().abs(), w.shape, dy.double().abs(), s,
                                                                   p, 1, groups))


def test_fp16_linear_c_equals_reference(exe16):
    g = torch.Generator().manual_seed(1)
    n, fin, fout = 5, 37, 11
    x, w, b = (h(torch.randn(*sh, generator=g)) for sh in ((n, fin), (fout, fin), (fout,)))
    dy = h(torch.randn(n, fout, generator=g))
    ints = [0] * 13 + [n, fout, fin]
    y = D.call(exe16, "linear_fwd", ints, [x, w, b])[0]
    assert same(y, h(R.linear_fwd(x, w, b)))
    assert same(D.call(exe16, "linear_bwd_in", ints, [dy, w])[0], h(R.linear_bwd_in(dy, w)))
    dw, db = R.linear_bwd_w(dy, x, True)
    cdw, cdb = D.call(exe16, "linear_bwd_w", ints, [dy, x])
    assert same(cdw, h(dw)) and same(cdb, h(db))
    exact = x.double() @ w.double().t() + b.double()
    assert within(y, exact, fin + 1, x.double().abs() @ w.double().abs().t() + b.double().abs())


@pytest.mark.parametrize("train", [True, False])
def test_fp16_batchnorm_c_equals_reference(exe16, train):
    """FP16 tensors in and out; batch statistics, 1/std and running statistics stay float."""
    g = torch.Generator().manual_seed(2)
    n, c, hh, w = 3, 5, 4, 3
    x = h(torch.randn(n, c, hh, w, generator=g) * 2 + 1)
    gm, bt = h(torch.randn(c, generator=g)), h(torch.randn(c, generator=g))
    rm, rv = torch.randn(c, generator=g), torch.rand(c, generator=g) + 0.5
    dy = h(torch.randn(n, c, hh, w, generator=g))
    ints = [0] * 13 + [n, c, hh * w]
    consts = torch.tensor([1e-5, 1 - 0.1, 0.1])
    if train:
        y, mean, inv, rm2, rv2 = R.bn_train_fwd(x, gm, bt, 1e-5, 0.1, rm, rv)
        outs = D.call(exe16, "bn_train_fwd", ints, [x, gm, bt, rm, rv, consts])
        assert all(same(a, b) for a, b in zip(outs, [h(y), mean, inv, rm2, rv2]))
        want = R.bn_train_bwd(dy, x, gm, mean, inv)
        outs = D.call(exe16, "bn_train_bwd", ints, [dy, x, gm, mean, inv])
    else:
        y, inv = R.bn_eval_fwd(x, gm, bt, rm, rv, 1e-5)
        outs = D.call(exe16, "bn_eval_fwd", ints, [x, gm, bt, rm, rv, consts])
        assert same(outs[0], h(y)) and same(outs[1], inv)
        want = R.bn_eval_bwd(dy, x, gm, rm, inv)
        outs = D.call(exe16, "bn_eval_bwd", ints, [dy, x, gm, rm, inv])
    assert all(same(a, h(b)) for a, b in zip(outs, want))


@pytest.mark.parametrize("k,s,p", [((2, 2), (2, 2), (0, 0)), ((3, 3), (1, 1), (1, 1)), ((3, 2), (2, 1), (1, 0))])
def test_fp16_pools_sum_in_float_and_round_once(exe16, k, s, p):
    """Overlapping windows: a pool backward sums each input's gradient in float, then rounds."""
    g = torch.Generator().manual_seed(3)
    x = h(torch.randn(2, 3, 7, 6, generator=g))
    x[0, 0, :2, :2] = 1.5  # ties: the first maximum wins
    ym, arg = R.maxpool_fwd(x, k, s, p)
    dy = h(torch.randn(ym.shape, generator=g))
    G = D.geom(x.shape, (3, 3) + k, ym.shape, s, p, 1)
    G[3] = 3
    assert same(D.call(exe16, "maxpool_fwd", G, [x])[0], ym)
    assert same(D.call(exe16, "maxpool_bwd", G, [x, dy])[0], h(R.maxpool_bwd(dy, arg, x.shape)))
    assert same(D.call(exe16, "avgpool_fwd", G, [x])[0], h(R.avgpool_fwd(x, k, s, p)))
    assert same(D.call(exe16, "avgpool_bwd", G, [dy])[0], h(R.avgpool_bwd(dy, x.shape, k, s, p)))


def test_fp16_gap_loss_with_scale_and_sgd_c_equal_reference(exe16):
    g = torch.Generator().manual_seed(4)
    x = h(torch.randn(3, 4, 5, 5, generator=g))
    ints = [0] * 13 + [3, 4, 25]
    assert same(D.call(exe16, "gap_fwd", ints, [x])[0], h(R.gap_fwd(x)))
    dy = h(torch.randn(3, 4, generator=g))
    assert same(D.call(exe16, "gap_bwd", ints, [dy])[0], h(R.gap_bwd(dy, x.shape)))
    logits, labels = h(torch.randn(6, 10, generator=g) * 5), torch.randint(0, 10, (6,), generator=g)
    loss, d = R.softmax_ce(logits, labels)
    for scale in (1.0, 2.0 ** 15, 2.0 ** 24):   # 2^24: some scaled gradients overflow to inf, as in torch
        closs, cd = D.call(exe16, "softmax_ce", [0] * 13 + [6, 10], [logits, labels.float(), torch.tensor([scale])])
        assert same(closs, loss.reshape(1)) and same(cd, h(d * R.c32(scale)))
    assert bool(torch.isinf(cd).any())
    p, buf = torch.randn(50, generator=g), torch.randn(50, generator=g)
    gr = h(torch.randn(50, generator=g) * 2.0 ** 10)
    for scale in (1.0, 2.0 ** 10):
        np_, nb = R.sgd(p, buf, gr / R.c32(scale) if scale != 1 else gr, 0.05, 0.9, 5e-4)
        cp, cb = D.call(exe16, "sgd", [], [p, buf, gr, torch.tensor([0.05, 0.9, 5e-4, scale])])
        assert same(cp, np_) and same(cb, nb)
