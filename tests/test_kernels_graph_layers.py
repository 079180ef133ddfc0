"""Graph-op layers vs torch autograd (float64): LayerNorm, BatchNorm1d, Conv1d, pools with
ceil_mode / count_include_pad=False, 1d and adaptive pools, nearest and bilinear upsampling;
the geometry and op counts of kernels.macs against torch and hand counts; float32 runs."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from tinycl.errors import TinyclError
from tinycl.kernels import batchnorm1d as BN
from tinycl.kernels import conv1d as C
from tinycl.kernels import layernorm as LN
from tinycl.kernels import macs
from tinycl.kernels import pool as P
from tinycl.kernels import upsample as U

D = torch.float64


def close(a, b, tol=1e-10):
    assert a.shape == b.shape, (a.shape, b.shape)
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    if a.numel():
        assert (a - b).abs().max() <= tol * b.abs().max().clamp_min(1.0), float((a - b).abs().max())


def rand(shape, seed, scale=1.0, dtype=D):
    return torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed)) * scale


def grads_of(fn, *xs, seed=0):
    """``fn`` on leaf copies of the tensors in ``xs`` (None passes through); ``(y, dy, grads)``."""
    leaves = [x.detach().clone().requires_grad_(True) if isinstance(x, torch.Tensor) else x for x in xs]
    y = fn(*leaves)
    dy = rand(y.shape, seed, dtype=y.dtype)
    y.backward(dy)
    return y.detach(), dy, [x.grad if isinstance(x, torch.Tensor) else None for x in leaves]


# ---------------------------------------------------------------------------------------------
# LayerNorm
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["aten", "explicit"])
@given(st.lists(st.integers(1, 5), min_size=1, max_size=4), st.integers(1, 3), st.sampled_from(["both", "gamma",
       "none"]), st.integers(0, 50))
def test_layernorm(impl, shape, k, affine, seed):
    k = min(k, len(shape))
    ns = shape[-k:]
    x = rand(shape, seed, 3.0) + 1
    gamma = rand(ns, seed + 1) if affine != "none" else None
    beta = rand(ns, seed + 2) if affine == "both" else None
    y, dy, (dx, dg, db) = grads_of(lambda t, g, b: F.layer_norm(t, ns, g, b, 1e-5), x, gamma, beta)
    yy, cache = LN.layernorm_forward(x, ns, gamma, beta, 1e-5, impl)
    close(yy, y)
    ddx, ddg, ddb = LN.layernorm_backward(dy, ns, gamma, beta, cache, impl=impl)
    close(ddx, dx)
    close(LN.layernorm_backward_input(dy, ns, gamma, cache, impl), dx)
    wg, wb = LN.layernorm_backward_weight(dy, ns, gamma, beta, cache, impl)
    for got, got2, want in ((ddg, wg, dg), (ddb, wb, db)):
        if want is None:
            assert got is None and got2 is None
        else:
            close(got, want)
            close(got2, want)


def test_layernorm_errors_and_ops():
    with pytest.raises(TinyclError, match="layer norm"):
        LN.layernorm_forward(torch.ones(2, 3), (4,))
    assert macs.layernorm_ops(24, 4) == {"forward": 96, "backward_input": 144, "backward_weight": 48, "update": 8}
    assert macs.layernorm_ops(24, 4, affine=False)["update"] == 0


# ---------------------------------------------------------------------------------------------
# BatchNorm1d
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["aten", "explicit"])
@given(st.integers(1, 4), st.integers(1, 4), st.one_of(st.none(), st.integers(1, 5)), st.booleans(),
       st.integers(0, 50))
def test_batchnorm1d_train(impl, n, c, length, affine, seed):
    shape = (n, c) if length is None else (n, c, length)
    if n * (length or 1) == 1:
        shape = (2,) + shape[1:]
    x = rand(shape, seed, 3.0) + 1
    gamma, beta = (rand(c, seed + 1), rand(c, seed + 2)) if affine else (None, None)
    rm, rv = rand(c, seed + 3), torch.rand(c, dtype=D) + 0.5
    rm_ref, rv_ref = rm.clone(), rv.clone()
    y, dy, (dx, dg, db) = grads_of(lambda t, g, b: F.batch_norm(t, rm_ref, rv_ref, g, b, True, 0.1, 1e-5),
                                   x, gamma, beta)
    yy, cache = BN.batchnorm1d_forward_train(x, gamma, beta, rm, rv, 1e-5, 0.1, impl)
    close(yy, y, 1e-9)
    close(rm, rm_ref)
    close(rv, rv_ref)  # unbiased variance over N*L values
    ddx, ddg, ddb = BN.batchnorm1d_backward_train(dy, gamma, beta, cache, 1e-5)
    close(ddx, dx, 1e-8)
    if affine:
        close(ddg, dg, 1e-9)
        close(ddb, db)
    else:
        assert ddg is None and ddb is None


@pytest.mark.parametrize("impl", ["aten", "explicit"])
@given(st.integers(1, 3), st.integers(1, 4), st.one_of(st.none(), st.integers(1, 5)), st.booleans())
def test_batchnorm1d_eval(impl, n, c, length, affine):
    shape = (n, c) if length is None else (n, c, length)
    x = rand(shape, n + c)
    gamma, beta = (rand(c, 1), rand(c, 2)) if affine else (None, None)
    rm, rv = rand(c, 3), torch.rand(c, dtype=D) + 0.5
    y, dy, (dx, dg, db) = grads_of(lambda t, g, b: F.batch_norm(t, rm, rv, g, b, False, 0.1, 1e-5), x, gamma, beta)
    close(BN.batchnorm1d_forward_eval(x, gamma, beta, rm, rv, 1e-5, impl), y)
    ddx, ddg, ddb = BN.batchnorm1d_backward_eval(dy, x, gamma, beta, rm, rv, 1e-5, impl)
    close(ddx, dx)
    if affine:
        close(ddg, dg)
        close(ddb, db)
    else:
        assert ddg is None and ddb is None


def test_batchnorm1d_errors_and_no_running_stats():
    with pytest.raises(TinyclError, match="more than 1 value"):
        BN.batchnorm1d_forward_train(torch.ones(1, 3), None, None)
    with pytest.raises(TinyclError, match="N x C"):
        BN.batchnorm1d_forward_train(torch.ones(2, 3, 4, 5), None, None)
    x = rand((4, 3), 0)
    y, _ = BN.batchnorm1d_forward_train(x, None, None, None, None)  # track_running_stats=False
    close(y, F.batch_norm(x, None, None, None, None, True, 0.1, 1e-5))


# ---------------------------------------------------------------------------------------------
# Conv1d
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["aten", "im2col"])
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.sampled_from([1, 2, 3]), st.integers(1, 5),
       st.integers(1, 3), st.integers(0, 2), st.integers(0, 6), st.booleans())
def test_conv1d(impl, n, cpg, opg, groups, k, stride, padding, extra, bias):
    cin, cout = cpg * groups, opg * groups
    length = max(k - 2 * padding, 1) + extra
    g = torch.Generator().manual_seed(n + 7 * k + 31 * extra)
    x = torch.randn(n, cin, length, dtype=D, generator=g)
    w = torch.randn(cout, cpg, k, dtype=D, generator=g)
    b = torch.randn(cout, dtype=D, generator=g) if bias else None
    y, dy, (dx, dw, db) = grads_of(lambda t, ww, bb: F.conv1d(t, ww, bb, stride, padding, 1, groups), x, w, b)
    close(C.conv1d_forward(x, w, b, stride, padding, groups, impl), y)
    close(C.conv1d_backward_input(dy, w, x.shape, stride, padding, groups, impl), dx)
    ddw, ddb = C.conv1d_backward_weight(dy, x, w.shape, stride, padding, groups, bias, impl)
    close(ddw, dw)
    fx, fw, fb = C.conv1d_backward(dy, x, w, stride, padding, groups, bias, True, impl)
    close(fx, dx)
    close(fw, dw)
    if bias:
        close(ddb, db)
        close(fb, db)
    else:
        assert ddb is None and fb is None
    m = macs.conv1d_macs(n, cin, cout, length, k, stride, padding, groups)
    lo = y.shape[-1]
    assert m["forward"] == n * cout * lo * cpg * k and m["update"] == cout * cpg * k


def test_conv1d_errors():
    with pytest.raises(TinyclError, match="conv1d"):
        C.conv1d_forward(torch.ones(1, 2, 3, 3), torch.ones(2, 2, 1))
    with pytest.raises(TinyclError, match="stride"):
        C.conv1d_forward(torch.ones(1, 2, 5), torch.ones(2, 2, 1), stride=(1, 2))


# ---------------------------------------------------------------------------------------------
# pools: ceil_mode, count_include_pad=False, 1d, adaptive
# ---------------------------------------------------------------------------------------------

@st.composite
def pool_geometry(draw):
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    hw = (max(k[0] - 2 * p[0], 1) + draw(st.integers(0, 5)), max(k[1] - 2 * p[1], 1) + draw(st.integers(0, 5)))
    return k, s, p, hw, draw(st.booleans()), draw(st.booleans())


@given(st.integers(1, 3), st.integers(1, 3), pool_geometry(), st.booleans())
def test_pool2d_ceil_and_pad_count(n, c, geom, square):
    k, s, p, (h, w), ceil_mode, cip = geom
    if square:
        k, s, p = k[0], s[0], p[0]
        w = h = max(h, k - 2 * p)
    x = rand((n, c, h, w), h * 10 + w)
    y, dy, (dx,) = grads_of(lambda t: F.max_pool2d(t, k, s, p, 1, ceil_mode), x)
    yy, idx = P.maxpool2d_forward(x, k, s, p, ceil_mode)
    close(yy, y)
    close(P.maxpool2d_backward(dy, idx, x.shape), dx)
    y, dy, (dx,) = grads_of(lambda t: F.avg_pool2d(t, k, s, p, ceil_mode, cip), x)
    close(P.avgpool2d_forward(x, k, s, p, ceil_mode, cip), y)
    close(P.avgpool2d_backward(dy, x.shape, k, s, p, ceil_mode, cip), dx)
    close(P.avgpool2d_backward(dy, x.shape, k, s, p, ceil_mode, cip, impl="explicit"), dx)
    ho, wo = (macs.pool_out_size(h, k if square else k[0], s if square else s[0], p if square else p[0], 1, ceil_mode),
              macs.pool_out_size(w, k if square else k[1], s if square else s[1], p if square else p[1], 1, ceil_mode))
    assert (ho, wo) == tuple(y.shape[-2:])


def test_pool2d_ceil_true_divisor():
    """A 3x3/2 ceil_mode window hanging over the edge of a 6x6 input averages only what it covers."""
    x = torch.arange(36, dtype=D).reshape(1, 1, 6, 6)
    y = P.avgpool2d_forward(x, 3, 2, 0, True, False)
    assert y.shape == (1, 1, 3, 3)
    assert float(y[0, 0, 2, 2]) == float(x[0, 0, 4:, 4:].mean())
    dy = torch.zeros_like(y)
    dy[0, 0, 2, 2] = 1.0
    dx = P.avgpool2d_backward(dy, x.shape, 3, 2, 0, True, False, impl="explicit")
    assert float(dx.sum()) == 1.0 and float(dx[0, 0, 5, 5]) == 0.25
    with pytest.raises(TinyclError, match="padding"):
        P.avgpool2d_forward(x, 2, 2, 2)


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.one_of(st.none(), st.integers(1, 3)),
       st.integers(0, 2), st.integers(0, 6), st.booleans(), st.booleans())
def test_pool1d(n, c, k, s, p, extra, ceil_mode, cip):
    p = min(p, k // 2)
    length = max(k - 2 * p, 1) + extra
    x = rand((n, c, length), length + k)
    y, dy, (dx,) = grads_of(lambda t: F.max_pool1d(t, k, s, p, 1, ceil_mode), x)
    yy, idx = P.maxpool1d_forward(x, k, s, p, ceil_mode)
    close(yy, y)
    close(P.maxpool1d_backward(dy, idx, x.shape), dx)
    y, dy, (dx,) = grads_of(lambda t: F.avg_pool1d(t, k, s, p, ceil_mode, cip), x)
    close(P.avgpool1d_forward(x, k, s, p, ceil_mode, cip), y)
    close(P.avgpool1d_backward(dy, x.shape, k, s, p, ceil_mode, cip), dx)
    close(P.avgpool1d_backward(dy, x.shape, k, s, p, ceil_mode, cip, impl="explicit"), dx)


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 15), st.integers(1, 15), st.integers(1, 8),
       st.one_of(st.none(), st.integers(1, 8)))
def test_adaptive_avgpool2d(n, c, h, w, oh, ow):
    x = rand((n, c, h, w), h * 17 + w)
    size = (oh, ow)
    y, dy, (dx,) = grads_of(lambda t: F.adaptive_avg_pool2d(t, size), x)
    close(P.adaptive_avgpool2d_forward(x, size), y)
    close(P.adaptive_avgpool2d_backward(dy, x.shape), dx)


@pytest.mark.parametrize("hw", [14, 13])
def test_adaptive_avgpool2d_7x7(hw):
    x = rand((2, 3, hw, hw), hw)
    y, dy, (dx,) = grads_of(lambda t: F.adaptive_avg_pool2d(t, 7), x)
    close(P.adaptive_avgpool2d_forward(x, 7), y)
    close(P.adaptive_avgpool2d_backward(dy, x.shape), dx)


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 15), st.integers(1, 9))
def test_adaptive_avgpool1d(n, c, length, out):
    x = rand((n, c, length), length * 3 + out)
    y, dy, (dx,) = grads_of(lambda t: F.adaptive_avg_pool1d(t, out), x)
    close(P.adaptive_avgpool1d_forward(x, out), y)
    close(P.adaptive_avgpool1d_backward(dy, x.shape), dx)


# ---------------------------------------------------------------------------------------------
# upsampling
# ---------------------------------------------------------------------------------------------

@st.composite
def upsample_args(draw):
    if draw(st.booleans()):
        return {"size": (draw(st.integers(1, 9)), draw(st.integers(1, 9)))}
    f = draw(st.sampled_from([1.0, 1.5, 2.0, 3.0, 0.5, 1.7, 2.5]))
    g = draw(st.sampled_from([f, 2.0, 1.25]))
    return {"scale_factor": (f, g) if draw(st.booleans()) else f}


@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 6), st.integers(1, 6), upsample_args(), st.booleans())
def test_upsample(n, c, h, w, args, align):
    x = rand((n, c, h, w), h * 7 + w)
    if any(o <= 0 for o in U.upsample_geometry((h, w), **args)[0]):
        return
    y, dy, (dx,) = grads_of(lambda t: F.interpolate(t, mode="nearest", **args), x)
    close(U.upsample_nearest2d_forward(x, **args), y)
    close(U.upsample_nearest2d_backward(dy, x.shape, **args), dx)
    y, dy, (dx,) = grads_of(lambda t: F.interpolate(t, mode="bilinear", align_corners=align, **args), x)
    close(U.upsample_bilinear2d_forward(x, align_corners=align, **args), y)
    close(U.upsample_bilinear2d_backward(dy, x.shape, align_corners=align, **args), dx)


def test_upsample_errors_and_ops():
    x = torch.ones(1, 1, 2, 2)
    with pytest.raises(TinyclError, match="exactly one"):
        U.upsample_nearest2d_forward(x)
    with pytest.raises(TinyclError, match="exactly one"):
        U.upsample_nearest2d_forward(x, size=4, scale_factor=2)
    with pytest.raises(TinyclError, match="N x C x H x W"):
        U.upsample_bilinear2d_forward(torch.ones(1, 2, 3), size=4)
    assert macs.upsample_out_size(5, scale=1.5) == 7 and macs.upsample_out_size(5, out=3) == 3
    assert macs.upsample_ops(10, "nearest") == {"forward": 0, "backward_input": 10, "backward_weight": 0, "update": 0}
    assert macs.upsample_ops(10, "bilinear")["forward"] == 70


# ---------------------------------------------------------------------------------------------
# geometry and op counts
# ---------------------------------------------------------------------------------------------

@given(st.integers(1, 20), st.integers(1, 5), st.integers(1, 4), st.integers(0, 2), st.booleans())
def test_pool_geometry_vs_torch(size, k, s, p, cip):
    """Output sizes and window counts of kernels.macs against what torch's pools produce."""
    p = min(p, k // 2)
    if size + 2 * p < k:
        return
    for ceil_mode in (False, True):
        ones = torch.ones(1, 1, 1, size, dtype=D)
        covered = F.avg_pool2d(ones, (1, k), (1, s), (0, p), ceil_mode, True, divisor_override=1)[0, 0, 0]
        assert covered.numel() == macs.pool_out_size(size, k, s, p, 1, ceil_mode)
        assert covered.tolist() == macs.pool_window_sizes(size, k, s, p, ceil_mode, include_pad=False)
        ratio = F.avg_pool2d(ones, (1, k), (1, s), (0, p), ceil_mode, cip)[0, 0, 0]
        want = macs.pool_window_sizes(size, k, s, p, ceil_mode, include_pad=cip)
        assert torch.allclose(covered / ratio, torch.tensor(want, dtype=D), rtol=1e-12)


def test_pool_geometry_hand_cases():
    # 3x3 stride-2 ceil_mode pools as in GoogLeNet/SqueezeNet: 112 -> 56, 55 -> 27, 13 -> 6 and 14 -> 7
    assert [macs.pool_out_size(v, 3, 2, 0, 1, True) for v in (112, 55, 13, 14)] == [56, 27, 6, 7]
    assert [macs.pool_out_size(v, 3, 2, 0, 1, False) for v in (112, 14)] == [55, 6]
    # the last window must start inside the input or its left padding: 5 with k2 s2 p1 gives 3, not 4
    assert macs.pool_out_size(5, 2, 2, 1, 1, True) == 3
    assert macs.pool_window_sizes(6, 3, 2, 0, True) == [3, 3, 2]
    assert macs.pool_window_sizes(5, 3, 2, 1, True, include_pad=True) == [3, 3, 3]
    assert macs.pool_window_sizes(5, 3, 2, 1, True, include_pad=False) == [2, 3, 2]
    assert macs.adaptive_windows(5, 3) == [(0, 2), (1, 4), (3, 5)]
    assert macs.adaptive_windows(14, 7) == [(2 * i, 2 * i + 2) for i in range(7)]
    assert macs.adaptive_windows(2, 4) == [(0, 1), (0, 1), (1, 2), (1, 2)]


def test_pool_and_adaptive_op_counts():
    # max 3x3/2 ceil on 1x2x6x6: windows 3,3,2 per dim -> 8*8 = 64 reads per plane, 9 outputs
    assert macs.pool2d_ops(1, 2, (6, 6), 3, 2, 0, True, "max") == {"forward": 128, "backward_input": 18,
                                                                  "backward_weight": 0, "update": 0}
    assert macs.pool2d_ops(1, 2, (6, 6), 3, 2, 0, True, "avg")["forward"] == 128 + 18
    # 1d: L=5, k=3, s=2, p=1, ceil: windows 2,3,2 -> 7 reads, 3 outputs, per channel
    assert macs.pool1d_ops(2, 1, 5, 3, 2, 1, True, "max") == {"forward": 14, "backward_input": 6,
                                                             "backward_weight": 0, "update": 0}
    # adaptive 5 -> 3 (windows 2, 3, 2) along both dims of 1x1x5x5: 49 reads + 9 outputs
    assert macs.adaptive_avgpool_ops(1, 1, (5, 5), (3, 3))["forward"] == 58
    assert macs.adaptive_avgpool_ops(2, 3, (4,), (2,))["backward_input"] == 6 * (4 + 2)


# ---------------------------------------------------------------------------------------------
# float32: every layer runs and agrees with the float64 result
# ---------------------------------------------------------------------------------------------

def test_float32_runs():
    x64 = rand((2, 4, 9, 9), 0)
    x = x64.float()
    cases = [
        lambda t: P.avgpool2d_forward(t, 3, 2, 1, True, False),
        lambda t: P.maxpool2d_forward(t, 3, 2, 0, True)[0],
        lambda t: P.adaptive_avgpool2d_forward(t, 7),
        lambda t: U.upsample_bilinear2d_forward(t, scale_factor=2),
        lambda t: U.upsample_nearest2d_forward(t, size=(5, 13)),
        lambda t: LN.layernorm_forward(t, (9, 9), None, None)[0],
        lambda t: BN.batchnorm1d_forward_train(t.flatten(2), None, None)[0],
        lambda t: C.conv1d_forward(t.flatten(2), torch.ones(3, 4, 3, dtype=t.dtype), None, 2, 1),
    ]
    for f in cases:
        y, y64 = f(x), f(x64)
        assert y.dtype == torch.float32
        assert (y.double() - y64).abs().max() <= 1e-5 * y64.abs().max().clamp_min(1.0)
    dy = torch.ones(2, 4, 5, 5)
    assert P.avgpool2d_backward(dy, x.shape, 3, 2, 1, True, False, impl="explicit").dtype == torch.float32
