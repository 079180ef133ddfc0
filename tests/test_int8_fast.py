"""Fast INT8 paths (kernels/int8_fast.py) give the same codes as integer references.

Each path is forced in turn: oneDNN's int8 convolution (where this CPU has it), float32 ops on
input-channel chunks (values chosen so that one float32 sum would not be exact), the float64
requantization (exhaustive accumulator ranges, ties, M = 2^30, shift 0) and the add table
(all 65,536 code pairs); the zoo fronts are compared end to end, fast against reference.
"""

from unittest import mock

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from tinycl.kernels import int8 as K
from tinycl.kernels import int8_fast as fast
from tinycl.models.int8_front import quantize_front
from tinycl.models.registry import create
from tinycl.numerics import quant as Q

SETTINGS = settings(max_examples=40, deadline=None)


def codes(g, shape, lo=-128, hi=127):
    return torch.randint(lo, hi + 1, shape, generator=g, dtype=torch.int64).to(torch.int8)


def int_conv(x, zp, w, bias, stride, pad, groups):
    """INT64 conv from shifted slices (no floats): padding is real 0."""
    n, cin, h, wd = x.shape
    cout, cpg, kh, kw = w.shape
    xp = torch.zeros(n, cin, h + 2 * pad, wd + 2 * pad, dtype=torch.int64)
    xp[:, :, pad:pad + h, pad:pad + wd] = x.to(torch.int64) - zp
    ho, wo = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = torch.zeros(n, cout, ho, wo, dtype=torch.int64)
    opg = cout // groups
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            for gi in range(groups):
                p = patch[:, gi * cpg:(gi + 1) * cpg]
                wt = w[gi * opg:(gi + 1) * opg, :, i, j].to(torch.int64)
                out[:, gi * opg:(gi + 1) * opg] += torch.einsum("nchw,oc->nohw", p, wt)
    return out if bias is None else out + bias.to(torch.int64).reshape(1, -1, 1, 1)


def multipliers(g, c, lo=-14.0, hi=-0.2):
    """Per-channel (M, shift) of reals 2^u, u uniform in [lo, hi]."""
    reals = torch.pow(2.0, torch.rand(c, generator=g, dtype=torch.float64) * (hi - lo) + lo)
    return Q.quantize_multipliers(reals)


no_onednn = mock.patch.object(fast, "conv_acc_onednn", return_value=None)


@SETTINGS
@given(n=st.integers(1, 2), cin=st.integers(1, 5), mult=st.integers(1, 3), h=st.integers(1, 8),
       w=st.integers(1, 8), k=st.integers(1, 3), stride=st.sampled_from([1, 2]), pad=st.integers(0, 2),
       mode=st.sampled_from(["dense", "depthwise", "grouped"]), zp=st.integers(-128, 127),
       out_zp=st.integers(-128, 127), relu=st.booleans(), bias=st.booleans(),
       path=st.sampled_from(["auto", "float32"]), seed=st.integers(0, 2 ** 16))
def test_conv2d_int8_fast_bit_exact(n, cin, mult, h, w, k, stride, pad, mode, zp, out_zp, relu, bias, path, seed):
    if h + 2 * pad < k or w + 2 * pad < k:
        return
    g = torch.Generator().manual_seed(seed)
    if mode == "dense":
        groups, cout = 1, mult + 1
    elif mode == "depthwise":
        groups, cout = cin, cin * mult
    else:
        cin, groups, cout = 2 * cin, 2, 2 * mult
    x = codes(g, (n, cin, h, w))
    wq = codes(g, (cout, cin // groups, k, k), -127, 127)
    b = torch.randint(-2 ** 16, 2 ** 16, (cout,), generator=g, dtype=torch.int32) if bias else None
    m, s = multipliers(g, cout)
    qmin = out_zp if relu else -128
    want = Q.requantize(int_conv(x, zp, wq, b, stride, pad, groups), m.reshape(1, -1, 1, 1),
                        s.reshape(1, -1, 1, 1), out_zp, qmin, 127)
    args = (x, zp, wq, b, m, s, out_zp, qmin, 127, stride, pad, groups)
    if path == "float32":
        with no_onednn:
            got = K.conv2d_int8(*args)
    else:
        got = K.conv2d_int8(*args)
    assert got.dtype == torch.int8 and got.shape == want.shape
    assert torch.equal(got, want)
    assert torch.equal(K.conv2d_int8_ref(*args), want)


@pytest.mark.parametrize("use_onednn", [True, False])
@pytest.mark.parametrize("cin, k", [(64, 3), (200, 1), (3, 3)])
def test_conv2d_worst_case_values_force_chunks_and_stay_exact(cin, k, use_onednn):
    # all weights +-127 and activations 255 away from the zero point: 255 * 127 * K >= 2^24 for
    # K = 576 and 200 * 1 ... (200: 6.5M, below), so the first case needs input-channel chunks
    g = torch.Generator().manual_seed(cin)
    x = codes(g, (2, cin, 5, 5))
    x[0].fill_(127)
    w = torch.full((3, cin, k, k), 127, dtype=torch.int8)
    w[1] = -127
    w[2] = codes(g, (cin, k, k), -127, 127)
    b = torch.tensor([5, -7, 2 ** 20], dtype=torch.int32)
    m, s = Q.quantize_multipliers(torch.tensor([2.0 ** -20, 2.0 ** -17, 3e-4], dtype=torch.float64))
    want = Q.requantize(int_conv(x, -128, w, b, 1, 1, 1), m.reshape(1, -1, 1, 1), s.reshape(1, -1, 1, 1), 3)
    acc = int_conv(x, -128, w, b, 1, 1, 1)
    if use_onednn:
        got = K.conv2d_int8(x, -128, w, b, m, s, 3, padding=1)
        got_acc = K.conv2d_acc(x, -128, w, b, padding=1)
    else:
        with no_onednn:
            got = K.conv2d_int8(x, -128, w, b, m, s, 3, padding=1)
            got_acc = K.conv2d_acc(x, -128, w, b, padding=1)
            if cin == 64:  # the float32 path splits the 64 input channels
                wabs = w.to(torch.int64).abs().sum(dim=(2, 3))
                assert len(fast._chunks(wabs, 2 ** 24)) >= 2
    assert torch.equal(got, want)
    assert torch.equal(got_acc.to(torch.int64), acc)


@SETTINGS
@given(n=st.integers(1, 6), fin=st.integers(1, 700), fout=st.integers(1, 5), zp=st.integers(-128, 127),
       heavy=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_linear_int8_fast_bit_exact(n, fin, fout, zp, heavy, seed):
    g = torch.Generator().manual_seed(seed)
    x = codes(g, (n, fin))
    w = torch.full((fout, fin), 127, dtype=torch.int8) if heavy else codes(g, (fout, fin), -127, 127)
    b = torch.randint(-2 ** 20, 2 ** 20, (fout,), generator=g, dtype=torch.int32)
    m, s = multipliers(g, fout, -22.0, -1.0)
    acc = (x.to(torch.int64) - zp) @ w.to(torch.int64).t() + b.to(torch.int64)
    want = Q.requantize(acc, m.reshape(1, -1), s.reshape(1, -1), -5)
    assert torch.equal(K.linear_int8(x, zp, w, b, m, s, -5), want)
    assert torch.equal(K.linear_acc(x, zp, w, b).to(torch.int64), acc)


@pytest.mark.parametrize("real", [2.0 ** -1, 2.0 ** -3, 2.0 ** -9, 0.75, 0.3, 1e-3, 0.999, 0.0])
@pytest.mark.parametrize("zp, qmin, qmax", [(0, -128, 127), (-128, -128, 127), (17, 17, 127), (-3, -50, 60)])
def test_requant_f64_exhaustive_range(real, zp, qmin, qmax):
    # every accumulator in a range around the unclamped region: ties (powers of two give
    # M = 2^30 and many exact halves), shift 0 (real >= 1/2) and a zero multiplier
    m, s = Q.quantize_multipliers(torch.tensor([real, real * 0.37 + 1e-4], dtype=torch.float64))
    span = 70000
    acc = torch.arange(-span, span + 1, dtype=torch.int64).reshape(1, 1, -1).expand(1, 2, -1)
    got = fast.requant_f64(acc.to(torch.float32), m, s, zp, qmin, qmax, span)
    want = Q.requantize(acc, m.reshape(1, -1, 1), s.reshape(1, -1, 1), zp, qmin, qmax)
    assert got is not None and torch.equal(got, want)


@SETTINGS
@given(bound_log=st.integers(4, 30), lo=st.floats(-30.0, -0.1), seed=st.integers(0, 2 ** 16),
       zp=st.integers(-128, 127), cl=st.booleans())
def test_requant_f64_random(bound_log, lo, seed, zp, cl):
    g = torch.Generator().manual_seed(seed)
    bound = 2 ** bound_log
    m, s = multipliers(g, 4, lo, -0.01)
    acc = torch.randint(-bound, bound + 1, (3, 4, 5, 6), generator=g, dtype=torch.int64)
    acc[0, :, 0, 0] = bound
    acc[0, :, 0, 1] = -bound
    af = acc.to(torch.float64)
    if cl:
        af = af.contiguous(memory_format=torch.channels_last)
    got = fast.requant_f64(af, m, s, zp, -128, 127, bound)
    want = Q.requantize(acc, m.reshape(1, -1, 1, 1), s.reshape(1, -1, 1, 1), zp)
    if got is not None:  # None: the float64 formula is not exact here (then the caller uses int64)
        assert torch.equal(got, want)
    else:
        # |acc * M| could reach 2^53 with no help from the clamp, or 2^(30+e) does (e > 21)
        assert bound_log >= 21 or lo < -19


def test_requant_f64_refuses_left_shifts():
    m, s = Q.quantize_multipliers(torch.tensor([1.5, 0.2], dtype=torch.float64))
    assert int(s[0]) > 0
    assert fast.requant_f64(torch.zeros(1, 2, 3), m, s, 0, -128, 127, 100) is None


def test_add_table_all_code_pairs_and_layouts():
    a = torch.arange(-128, 128).repeat_interleave(256).to(torch.int8).reshape(4, 4, 64, 64)
    b = torch.arange(-128, 128).repeat(256).to(torch.int8).reshape(4, 4, 64, 64)
    p = Q.add_params(0.031, 0.007, 0.02)
    want = K.add_int8_ref(a, -3, b, 11, p, -128, -128, 127)
    assert torch.equal(fast.add_lut(a, -3, b, 11, p, -128, -128, 127, K.add_int8_ref), want)
    acl, bcl = (t.contiguous(memory_format=torch.channels_last) for t in (a, b))
    got = K.add_int8(acl, -3, bcl, 11, p, -128, -128, 127)
    assert torch.equal(got, want) and got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(K.add_int8(acl, -3, b, 11, p, -128, -128, 127), want)  # mixed layouts
    assert torch.equal(K.add_int8(a, -3, b, 11, p, -128, -100, 90), K.add_int8_ref(a, -3, b, 11, p, -128, -100, 90))


def test_packed_weights_cache_sees_changed_weights():
    g = torch.Generator().manual_seed(0)
    x = codes(g, (2, 8, 6, 6))
    w = codes(g, (4, 8, 3, 3), -127, 127)
    first = K.conv2d_acc(x, 0, w, padding=1)
    w[0, 0, 0, 0] = -w[0, 0, 0, 0] + 1  # same tensor object, same address, new values
    assert torch.equal(K.conv2d_acc(x, 0, w, padding=1).to(torch.int64), int_conv(x, 0, w, None, 1, 1, 1))
    assert not torch.equal(first, K.conv2d_acc(x, 0, w, padding=1))


def test_onednn_probe_is_a_bool_and_path_follows_it():
    ok = fast.onednn_int8_exact()
    assert isinstance(ok, bool)
    g = torch.Generator().manual_seed(1)
    x, w = codes(g, (1, 4, 5, 5)), codes(g, (2, 4, 3, 3), -127, 127)
    got = fast.conv_acc_onednn(x, 0, w, None, (1, 1), (1, 1), 1)
    assert (got is not None) == ok


def _randomize_bn(model, seed):
    g = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            c = mod.num_features
            mod.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return model.eval()


@pytest.mark.parametrize("name, kwargs, shape", [
    ("resnet8", {}, (3, 32, 32)),
    ("resnet20", {"width": 0.5}, (3, 16, 16)),
    ("tinycl-net", {}, (3, 32, 32)),
    ("mobilenet-v1", {"width": 0.25, "input_shape": (3, 32, 32)}, (3, 32, 32)),
    ("ds-cnn", {}, (1, 49, 10)),
    ("vgg-cifar", {"width": 0.25}, (3, 32, 32)),
])
def test_zoo_fronts_fast_equals_reference(name, kwargs, shape):
    torch.manual_seed(0)
    model = _randomize_bn(create(name, **kwargs), 1)
    front = model[:-1] if name != "tinycl-net" else model  # all but the classifier (tinycl-net: all)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(24, *shape, generator=g)
    qf = quantize_front(front, x[:16])
    fast_q = qf.forward_int(x)[0]
    K.FAST = False
    try:
        ref_q = qf.forward_int(x)[0]
    finally:
        K.FAST = True
    assert torch.equal(fast_q, ref_q)
