"""Conv2d forward / input grad / weight grad against torch autograd in float64."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from tinycl.kernels.conv import conv2d_backward, conv2d_backward_input, conv2d_backward_weight, conv2d_forward
from tinycl.kernels.macs import conv2d_macs, conv_out_size


@st.composite
def conv_case(draw):
    kind = draw(st.sampled_from(["standard", "depthwise", "pointwise", "grouped"]))
    n = draw(st.sampled_from([1, 2, 3]))
    k = 1 if kind == "pointwise" else draw(st.integers(1, 4))
    stride = draw(st.integers(1, 2))
    padding = draw(st.integers(0, 2))
    h = draw(st.integers(max(k - 2 * padding, 1), 9))
    w = draw(st.integers(max(k - 2 * padding, 1), 9))
    if kind == "depthwise":
        cin = draw(st.integers(1, 5)); cout = cin * draw(st.integers(1, 2)); groups = cin
    elif kind == "grouped":
        groups = draw(st.integers(2, 3)); cin = groups * draw(st.integers(1, 2)); cout = groups * draw(st.integers(1, 2))
    else:
        cin, cout, groups = draw(st.integers(1, 5)), draw(st.integers(1, 5)), 1
    bias = draw(st.booleans())
    return n, cin, cout, h, w, k, stride, padding, groups, bias


def _reference(n, cin, cout, h, w, k, stride, padding, groups, bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cin, h, w, generator=g, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(cout, cin // groups, k, k, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(cout, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    y = F.conv2d(x, wt, b, stride, padding, 1, groups)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    y.backward(dy)
    return x, wt, b, y.detach(), dy


def _close(a, b, tol=1e-10):
    assert a.shape == b.shape
    scale = b.abs().max().clamp_min(1.0)
    assert (a - b).abs().max() <= tol * scale, float((a - b).abs().max())


@pytest.mark.parametrize("impl", ["aten", "im2col"])
@given(conv_case())
def test_conv_matches_autograd(impl, case):
    n, cin, cout, h, w, k, stride, padding, groups, bias = case
    x, wt, b, y, dy = _reference(*case)
    _close(conv2d_forward(x.detach(), wt.detach(), None if b is None else b.detach(), stride, padding, groups, impl), y)
    dx = conv2d_backward_input(dy, wt.detach(), x.shape, stride, padding, groups, impl)
    _close(dx, x.grad)
    dw, db = conv2d_backward_weight(dy, x.detach(), wt.shape, stride, padding, groups, bias, impl)
    _close(dw, wt.grad)
    if bias:
        _close(db, b.grad)
    else:
        assert db is None
    dx2, dw2, db2 = conv2d_backward(dy, x.detach(), wt.detach(), stride, padding, groups, bias, True, impl)
    _close(dx2, x.grad)
    _close(dw2, wt.grad)


def test_conv_float32_relative_error_below_1e5():
    x, wt, b, y, dy = _reference(4, 8, 16, 12, 12, 3, 2, 1, 1, True, seed=3)
    for impl in ("aten", "im2col"):
        y32 = conv2d_forward(x.detach().float(), wt.detach().float(), b.detach().float(), 2, 1, 1, impl)
        rel = ((y32.double() - y).norm() / y.norm()).item()
        assert rel < 1e-5, (impl, rel)
        dx32 = conv2d_backward_input(dy.float(), wt.detach().float(), x.shape, 2, 1, 1, impl)
        assert ((dx32.double() - x.grad).norm() / x.grad.norm()).item() < 1e-5
        dw32, _ = conv2d_backward_weight(dy.float(), x.detach().float(), wt.shape, 2, 1, 1, True, impl)
        assert ((dw32.double() - wt.grad).norm() / wt.grad.norm()).item() < 1e-5


def test_conv_macs_hand_counts():
    # 1 x 3 x 8 x 8 input, 4 filters 3x3, stride 1, pad 1: 8*8 outputs * 4 * 3*3*3 = 6912
    m = conv2d_macs(1, 3, 4, 8, 8, 3, 3, 1, 1, 1)
    assert m == {"forward": 6912, "backward_input": 6912, "backward_weight": 6912, "update": 108}
    # depthwise 2 x 16 x 10 x 10, 3x3 stride 2 pad 1 -> 5x5 out: 2*16*25*9 = 7200
    assert conv2d_macs(2, 16, 16, 10, 10, 3, 3, 2, 1, 16)["forward"] == 7200
    # pointwise 1 x 32 x 4 x 4 -> 64: 16 * 64 * 32 = 32768
    assert conv2d_macs(1, 32, 64, 4, 4, 1, 1)["forward"] == 32768
    assert conv_out_size(32, 3, 2, 1) == 16 and conv_out_size(7, 2, 2, 0) == 3


def test_conv_macs_non_square_stride_and_padding():
    # ds-cnn's first conv: 1x49x10 input, 64 filters 10x4, stride 2, padding (5, 1): out 25x5
    # -> 25 * 5 * 64 * 40 = 320,000 MACs (a square (5, 5) padding would count 576,000)
    assert conv2d_macs(1, 1, 64, 49, 10, 10, 4, (2, 2), (5, 1))["forward"] == 320_000
    from torch import nn

    from tinycl.graph import capture
    from tinycl.graph.counts import total_macs
    m = nn.Sequential(nn.Conv2d(1, 64, (10, 4), stride=2, padding=(5, 1)))
    assert total_macs(capture(m, (1, 49, 10)))["forward"] == 320_000


@pytest.mark.parametrize("impl", ["aten", "im2col"])
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 2), st.integers(1, 2),
       st.integers(0, 2), st.integers(0, 2), st.integers(0, 3), st.integers(0, 3), st.booleans())
def test_conv_non_square_kernel_stride_padding(impl, cin, cout, kh, kw, sh, sw, ph, pw, eh, ew, depthwise):
    groups = cin if depthwise else 1
    cout = cin if depthwise else cout
    h, w = max(kh - 2 * ph, 1) + eh, max(kw - 2 * pw, 1) + ew
    g = torch.Generator().manual_seed(kh * 100 + kw * 10 + sh + sw)
    x = torch.randn(2, cin, h, w, dtype=torch.float64, generator=g, requires_grad=True)
    wt = torch.randn(cout, cin // groups, kh, kw, dtype=torch.float64, generator=g, requires_grad=True)
    y = F.conv2d(x, wt, None, (sh, sw), (ph, pw), 1, groups)
    dy = torch.randn(y.shape, dtype=torch.float64, generator=g)
    y.backward(dy)
    _close(conv2d_forward(x.detach(), wt.detach(), None, (sh, sw), (ph, pw), groups, impl), y.detach())
    _close(conv2d_backward_input(dy, wt.detach(), x.shape, (sh, sw), (ph, pw), groups, impl), x.grad)
    dw, _ = conv2d_backward_weight(dy, x.detach(), wt.shape, (sh, sw), (ph, pw), groups, False, impl)
    _close(dw, wt.grad)
