"""INT8 front on graph ops beyond conv chains: mul, cat, tables, standalone BN, a torchvision MobileNetV2 front."""

import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from realmodels import torchvision_models
from test_int8_front import bn
from test_int8_front import mbqm_int as _mbqm_right


def mbqm_int(x, m, shift):
    """TFLite MultiplyByQuantizedMultiplier in Python ints, left shifts (saturating to int32) included."""
    if shift > 0:
        return _mbqm_right(max(-2 ** 31, min(2 ** 31 - 1, x << shift)), m, 0)
    return _mbqm_right(x, m, shift)
from tinycl.graph import capture
from tinycl.kernels import int8_elementwise as E
from tinycl.models.int8_front import float_front_eval, quantize_front
from tinycl.numerics import quant as Q


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), a_zp=st.integers(-128, 127), b_zp=st.integers(-128, 127),
       out_zp=st.integers(-128, 127), real=st.floats(1e-6, 4.0))
def test_mul_int8_matches_python_ints(seed, a_zp, b_zp, out_zp, real):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(-128, 128, (2, 3, 4, 4), generator=g, dtype=torch.int8)
    b = torch.randint(-128, 128, (2, 3, 1, 1), generator=g, dtype=torch.int8)
    m, s = Q.quantize_multiplier(real)
    got = E.mul_int8(a, a_zp, b, b_zp, m, s, out_zp)
    bb = b.expand_as(a)
    want = [max(-128, min(127, mbqm_int((int(x) - a_zp) * (int(y) - b_zp), m, s) + out_zp))
            for x, y in zip(a.flatten().tolist(), bb.flatten().tolist())]
    assert got.dtype == torch.int8 and got.flatten().tolist() == want


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), in_zp=st.integers(-128, 127), out_zp=st.integers(-128, 127),
       real=st.floats(0.05, 8.0))
def test_rescale_int8_matches_python_ints(seed, in_zp, out_zp, real):
    q = torch.randint(-128, 128, (64,), generator=torch.Generator().manual_seed(seed), dtype=torch.int8)
    m, s = Q.quantize_multiplier(real)
    want = [max(-128, min(127, mbqm_int(int(v) - in_zp, m, s) + out_zp)) for v in q.tolist()]
    assert E.rescale_int8(q, in_zp, m, s, out_zp).tolist() == want


def test_lut_is_the_quantized_function_of_each_code():
    table = E.make_lut(torch.sigmoid, 0.05, 3, 1 / 255, -128)
    codes = torch.arange(-128, 128, dtype=torch.int8)
    got = E.lut_int8(codes, table)
    for c, y in zip(codes.tolist(), got.tolist()):
        real = torch.sigmoid(torch.tensor(0.05 * (c - 3), dtype=torch.float64))
        assert y == int(Q.quantize(real, 1 / 255, -128))


class SEFront(nn.Module):
    """Conv, hardswish, squeeze-excitation (mean, convs, hardsigmoid, mul), cat, sigmoid, standalone BN."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = bn(8, 1)
        self.fc1, self.fc2 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
        self.side = nn.Conv2d(3, 4, 3, padding=1)
        self.post = bn(12, 2)

    def forward(self, x):
        y = nn.functional.hardswish(self.bn(self.conv(x)))
        s = nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(y.mean((2, 3), keepdim=True)))))
        y = torch.cat([y * s, torch.sigmoid(self.side(x))], 1)
        return self.post(y) * 0.5


def test_squeeze_excitation_cat_and_tables_close_to_float():
    torch.manual_seed(0)
    front = SEFront().eval()
    g = torch.Generator().manual_seed(1)
    calib, held = torch.randn(128, 3, 12, 12, generator=g), torch.randn(32, 3, 12, 12, generator=g)
    qf = quantize_front(front, calib)
    kinds = sorted({type(op).__name__ for op in qf.ops})
    assert kinds == ["Cat", "Keep", "Lut", "Mul", "Weighted"]
    f, d = float_front_eval(front, held), qf(held)
    rel = ((d - f).norm() / f.norm()).item()
    assert rel < 0.05, rel


def test_torchvision_mobilenet_v2_front_runs_in_int8():
    tvm = torchvision_models()
    torch.manual_seed(0)
    model = tvm.mobilenet_v2(num_classes=10).eval()
    for m in model.modules():   # non-trivial BN statistics, as after training
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    graph = capture(model, (3, 32, 32))
    front, _ = graph.split("features.6")
    g = torch.Generator().manual_seed(1)
    calib, held = torch.randn(64, 3, 32, 32, generator=g), torch.randn(16, 3, 32, 32, generator=g)
    qf = quantize_front(front, calib)
    assert sum(type(op).__name__ == "Add" for op in qf.ops) == 3      # the residual adds of features.3, 5, 6
    ref = float_front_eval(model.features[:7], held)
    out = qf(held)
    assert out.shape == ref.shape
    cos = nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0).item()
    assert cos > 0.98, cos
    q1, s, zp = qf.forward_int(held)
    q2, _, _ = qf.forward_int(held)
    assert q1.dtype == torch.int8 and torch.equal(q1, q2)
