"""QuantizedFront: BN folding, accuracy vs the float front, integer composition, errors, bytes."""

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from tinycl.errors import TinyclError, UnsupportedLayerError
from tinycl.models.blocks import Residual
from tinycl.models.int8_front import QuantizedFront, float_front_eval, fold_bn, quantize_front
from tinycl.numerics import quant as Q


def bn(c, seed):
    g = torch.Generator().manual_seed(seed)
    m = nn.BatchNorm2d(c)
    m.running_mean.copy_(torch.rand(c, generator=g) * 0.4 - 0.2)
    m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
    m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
    m.bias.data.copy_(torch.rand(c, generator=g) * 0.2 - 0.1)
    return m


def small_front(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), bn(8, 1), nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), bn(16, 2), nn.ReLU()),
        Residual(nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), bn(16, 3), nn.ReLU6(),
                               nn.Conv2d(16, 16, 1, bias=False), bn(16, 4)), post=nn.ReLU()),
        nn.Dropout(0.2), nn.MaxPool2d(2), nn.AvgPool2d(3, stride=1, padding=1),
        nn.Conv2d(16, 24, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 12))


# ----------------------------------------------------------------------------- BN folding

@settings(max_examples=15, deadline=None)
@given(cin=st.integers(1, 4), cout_mult=st.integers(1, 3), k=st.integers(1, 3), stride=st.integers(1, 2),
       depthwise=st.booleans(), bias=st.booleans(), affine=st.booleans(), seed=st.integers(0, 999))
def test_fold_bn_matches_conv_bn_eval(cin, cout_mult, k, stride, depthwise, bias, affine, seed):
    torch.manual_seed(seed)
    groups = cin if depthwise else 1
    conv = nn.Conv2d(cin, cin * cout_mult, k, stride=stride, padding=k // 2, groups=groups, bias=bias)
    b = nn.BatchNorm2d(cin * cout_mult, affine=affine)
    b.running_mean.normal_()
    b.running_var.uniform_(0.2, 3.0)
    if affine:
        b.weight.data.uniform_(0.5, 2.0)
        b.bias.data.normal_()
    seq = nn.Sequential(conv, b).train()  # train mode on purpose: folding uses running stats
    x = torch.randn(2, cin, 7, 6)
    want = float_front_eval(seq, x).double()
    w, bb = fold_bn(conv, b)
    got = nn.functional.conv2d(x.double(), w, bb, stride=stride, padding=k // 2, groups=groups)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    assert seq.training  # mode restored


# ----------------------------------------------------------------------------- accuracy

def test_quantized_front_close_to_float_front():
    front = small_front()
    g = torch.Generator().manual_seed(5)
    calib, held = torch.randn(128, 3, 16, 16, generator=g), torch.randn(64, 3, 16, 16, generator=g)
    qf = quantize_front(front, calib)
    f, d = float_front_eval(front, held), qf(held)
    assert d.shape == f.shape == (64, 12) and d.dtype == torch.float32
    # bound: ~0.4% rms noise per requantization (scale/sqrt(12) over a ~full 8-bit range),
    # 6 requantized tensors + input -> a few percent at most; we require < 5 % and cos > 0.99
    rel = ((d - f).norm() / f.norm()).item()
    cos = nn.functional.cosine_similarity(d.flatten(), f.flatten(), dim=0).item()
    assert rel < 0.05 and cos > 0.99, (rel, cos)


def test_forward_int_consistent_with_forward():
    front = small_front()
    x = torch.randn(16, 3, 16, 16)
    qf = quantize_front(front, x)
    q, s, zp = qf.forward_int(x)
    assert q.dtype == torch.int8 and isinstance(zp, int)
    assert torch.equal(Q.dequantize(q, s, zp), qf(x))


def test_train_mode_front_is_quantized_with_eval_semantics_and_not_modified():
    front = small_front().train()
    before = {k: v.clone() for k, v in front.state_dict().items()}
    x = torch.randn(32, 3, 16, 16)
    q_train = quantize_front(front, x).forward_int(x)[0]
    assert front.training
    for k, v in front.state_dict().items():
        assert torch.equal(v, before[k]), k  # running stats untouched
    q_eval = quantize_front(front.eval(), x).forward_int(x)[0]
    assert torch.equal(q_train, q_eval)


# ----------------------------------------------------------------------------- integer composition

def mbqm_int(x: int, m: int, shift: int) -> int:
    """Python-int TFLite MultiplyByQuantizedMultiplier (shift <= 0 here)."""
    ab = x * m
    t = ab + (1 << 30) if ab >= 0 else ab + 1 - (1 << 30)  # gemmlowp nudge
    hi = abs(t) // (1 << 31) * (1 if t >= 0 else -1)  # C truncating division
    e = -shift
    if e == 0:
        return hi
    mask = (1 << e) - 1
    return (hi >> e) + (1 if (hi & mask) > (mask >> 1) + (1 if hi < 0 else 0) else 0)


def test_two_layer_integer_pipeline_matches_python_ints():
    torch.manual_seed(3)
    front = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), bn(3, 7), nn.ReLU(), nn.Flatten(),
                          nn.Linear(3 * 3 * 3, 4))
    x = torch.randn(3, 2, 5, 5)
    qf = quantize_front(front, x)
    conv, flat, lin = qf.ops
    assert flat.kind == "view"
    xq = Q.quantize(x, qf.in_scale, qf.in_zp)
    # conv layer in python ints
    h = [[[[0] * 3 for _ in range(3)] for _ in range(3)] for _ in range(3)]
    for n in range(3):
        for co in range(3):
            for i in range(3):
                for j in range(3):
                    acc = int(conv.bq[co])
                    for ci in range(2):
                        for a in range(3):
                            for b in range(3):
                                r, c = 2 * i - 1 + a, 2 * j - 1 + b
                                if 0 <= r < 5 and 0 <= c < 5:
                                    acc += (int(xq[n, ci, r, c]) - qf.in_zp) * int(conv.wq[co, ci, a, b])
                    v = mbqm_int(acc, int(conv.mult[co]), int(conv.shift[co])) + conv.out_zp
                    h[n][co][i][j] = max(conv.qmin, min(conv.qmax, v))
    want = []
    for n in range(3):
        flat = [h[n][c][i][j] for c in range(3) for i in range(3) for j in range(3)]
        row = []
        for o in range(4):
            acc = int(lin.bq[o]) + sum((v - conv.out_zp) * int(lin.wq[o, f]) for f, v in enumerate(flat))
            row.append(max(-128, min(127, mbqm_int(acc, int(lin.mult[o]), int(lin.shift[o])) + lin.out_zp)))
        want.append(row)
    assert conv.qmin == conv.out_zp  # ReLU fused into the clamp
    assert qf.forward_int(x)[0].tolist() == want


# ----------------------------------------------------------------------------- bytes

def test_nbytes_hand_count():
    front = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 2 * 2, 5))
    qf = quantize_front(front, torch.randn(4, 3, 4, 4))
    conv = 4 * 3 * 3 * 3 + 4 * (4 + 4 + 1) + 1  # weights, bias+multiplier+shift per channel, out zp
    lin = 5 * 16 + 5 * 9 + 1
    assert qf.nbytes() == conv + lin + 5  # + input scale (float32) and zero point


def test_nbytes_residual_add_params():
    front = nn.Sequential(Residual(nn.Sequential(nn.Conv2d(2, 2, 1)), post=nn.ReLU()))
    qf = quantize_front(front, torch.randn(4, 2, 3, 3))
    assert qf.nbytes() == (4 + 2 * 9 + 1) + 16 + 5


# ----------------------------------------------------------------------------- errors

class _Binary(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.a, self.b, self.op = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1), op

    def forward(self, x):
        return self.op(self.a(x), self.b(x))


@pytest.mark.parametrize("front, path, kind", [
    (nn.Sequential(nn.Conv2d(3, 4, 3, dilation=2)), "0", "Conv2d"),
    (nn.Sequential(nn.AdaptiveAvgPool2d(2)), "0", "AdaptiveAvgPool2d"),
    (nn.Sequential(nn.Conv2d(3, 3, 1), nn.Sequential(nn.MaxPool2d(3, 2, ceil_mode=True))), "1.0", "MaxPool2d"),
    (nn.Sequential(nn.Conv2d(3, 3, 1), _Binary(torch.sub)), "1.sub", "sub"),
    (nn.Sequential(nn.Conv2d(3, 3, 1), _Binary(torch.div)), "1.div", "div"),
])
def test_unsupported_layer_names_path_and_type(front, path, kind):
    with pytest.raises(UnsupportedLayerError) as e:
        quantize_front(front, torch.randn(2, 3, 8, 8))
    msg = str(e.value)
    assert f"'{path}'" in msg and kind in msg and "\n" not in msg


def test_empty_calibration_is_a_user_error():
    with pytest.raises(TinyclError):
        quantize_front(nn.Sequential(nn.Conv2d(3, 4, 3)), torch.zeros(0, 3, 8, 8))


def test_is_a_module_without_parameters():
    qf = quantize_front(small_front(), torch.randn(8, 3, 16, 16))
    assert isinstance(qf, QuantizedFront) and isinstance(qf, nn.Module)
    assert list(qf.parameters()) == []


def test_more_layer_kinds_close_to_float():
    # BN in a different nested Sequential than its conv, standalone ReLU/ReLU6 clamps after pools,
    # AvgPool without padding counted, a conv shortcut in a Residual, Identity
    torch.manual_seed(11)
    front = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1)), nn.Sequential(bn(8, 8), nn.Identity()),
        nn.MaxPool2d(3, stride=2, padding=1), nn.ReLU(),
        Residual(nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1, bias=False), bn(12, 9), nn.ReLU(),
                               nn.Conv2d(12, 12, 3, padding=1, bias=False), bn(12, 10)),
                 shortcut=nn.Sequential(nn.Conv2d(8, 12, 1, stride=2, bias=False), bn(12, 11))),
        nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), nn.ReLU6())
    g = torch.Generator().manual_seed(12)
    calib, held = torch.randn(96, 3, 15, 15, generator=g), torch.randn(32, 3, 15, 15, generator=g)
    qf = quantize_front(front, calib)
    kinds = [type(op).__name__ + ":" + getattr(op, "kind", "") for op in qf.ops]
    assert kinds == ["Weighted:conv", "Keep:maxpool", "Keep:relu", "Weighted:conv", "Weighted:conv",
                     "Weighted:conv", "Add:", "Keep:avgpool", "Keep:relu6"]
    assert qf.ops[0].act is None and qf.ops[6].act is None  # nothing to fuse there
    assert qf.ops[3].act == "relu" and all(qf.ops[i].folded for i in (3, 4, 5))
    f, d = float_front_eval(front, held), qf(held)
    assert d.shape == f.shape == (32, 12, 4, 4)
    rel = ((d - f).norm() / f.norm()).item()
    cos = nn.functional.cosine_similarity(d.flatten(), f.flatten(), dim=0).item()
    assert rel < 0.05 and cos > 0.99, (rel, cos)
    assert float(d.min()) >= 0.0  # the final ReLU6 clamp holds on codes
