"""RangeNorm2d: hand-worked values, an independent NumPy forward, gradients vs torch autograd (float64)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from tinycl.errors import TinyclError
from tinycl.kernels import rangenorm as K
from tinycl.models.convert import from_torch
from tinycl.models.rangenorm import RangeNorm, RangeNorm2d, effective_groups, range_norm


def np_reference(x, gamma, beta, groups, eps=1e-5, stat="l1"):
    """Loop over samples and groups, written from the formula with NumPy."""
    x = np.asarray(x, dtype=np.float64)
    n, c = x.shape[:2]
    cg = c // groups
    y = np.empty_like(x)
    for i in range(n):
        for g in range(groups):
            blk = x[i, g * cg:(g + 1) * cg]
            m = blk.size
            if stat == "l1":
                scale = 1 / (math.sqrt(math.pi / 2) * np.abs(blk - blk.mean()).mean() + eps)
            else:
                const = 1 / (2 * math.sqrt(2 * math.log(m))) if m >= 2 else 1.0
                sigma = (blk.max() - blk.min()) * const
                scale = 2.0 ** -min(32, max(-32, round(math.log2(sigma + eps))))
            for j in range(cg):
                ch = g * cg + j
                y[i, ch] = (x[i, ch] - blk.mean()) * scale * gamma[ch] + beta[ch]
    return y


def test_hand_worked_l1():
    # mean 1.5, |d| = 1.5, .5, .5, 1.5 -> mean 1 -> sigma = sqrt(pi/2) = 1.2533 (+ eps)
    x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]], dtype=torch.float64)
    one, zero = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    y, _ = K.rangenorm_forward(x, one, zero, 1)
    s = math.sqrt(math.pi / 2) + 1e-5
    assert torch.allclose(y.flatten(), torch.tensor([-1.5, -0.5, 0.5, 1.5], dtype=torch.float64) / s, atol=1e-15)


def test_hand_worked_range():
    # m = 4: const = 1 / (2 sqrt(2 ln 4)) = 0.3003; range 3 -> sigma 0.901 -> k = round(-0.15) = 0
    x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]], dtype=torch.float64)
    y, _ = K.rangenorm_forward(x, torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64), 1,
                               stat="range")
    assert y.flatten().tolist() == [-1.5, -0.5, 0.5, 1.5]
    # x * 8: sigma 7.21 -> k = round(2.85) = 3 -> the same output (a shift by 3)
    y8, _ = K.rangenorm_forward(8 * x, torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64), 1,
                                stat="range")
    assert y8.flatten().tolist() == [-1.5, -0.5, 0.5, 1.5]
    assert K.rangenorm_shift(8 * x, 1).item() == 3


def test_ops_count_and_groups():
    assert K.rangenorm_ops(100, 4) == {"forward": 600, "backward_input": 400, "backward_weight": 200, "update": 8}
    assert effective_groups(16, 8) == 8 and effective_groups(12, 8) == 4 and effective_groups(7, 8) == 1
    with pytest.raises(TinyclError):
        effective_groups(0, 8)
    with pytest.raises(TinyclError):
        RangeNorm2d(4)(torch.zeros(1, 3, 2, 2))
    with pytest.raises(TinyclError):
        range_norm(stat="l2")


shapes = st.tuples(st.integers(1, 3), st.sampled_from([1, 2, 3, 4, 6, 8, 12]), st.integers(1, 5),
                   st.integers(1, 5), st.sampled_from([1, 2, 4, 8]), st.integers(0, 9999),
                   st.sampled_from(["l1", "range"]))


@settings(max_examples=30, deadline=None)
@given(shapes)
def test_forward_matches_numpy_and_backward_matches_autograd(s):
    n, c, h, w, groups, seed, stat = s
    torch.manual_seed(seed)
    m = RangeNorm2d(c, groups, stat=stat).double()
    with torch.no_grad():
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_()
    x = (torch.randn(n, c, h, w, dtype=torch.float64) * 3).requires_grad_(True)
    y = m(x)
    ref = np_reference(x.detach().numpy(), m.weight.detach().numpy(), m.bias.detach().numpy(), m.groups,
                       stat=stat)
    np.testing.assert_allclose(y.detach().numpy(), ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(y)
    y.backward(dy)
    _, cache = K.rangenorm_forward(x.detach(), m.weight.detach(), m.bias.detach(), m.groups, stat=stat)
    dx, dg, db = K.rangenorm_backward(dy, m.weight.detach(), cache, m.groups)
    torch.testing.assert_close(dx, x.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dg, m.weight.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(db, m.bias.grad, rtol=1e-10, atol=1e-12)


def test_batch_independent():
    torch.manual_seed(0)
    m = RangeNorm2d(8, 4).double()
    x = torch.randn(5, 8, 3, 3, dtype=torch.float64)
    whole = m(x)
    for i in range(5):
        torch.testing.assert_close(m(x[i:i + 1]), whole[i:i + 1], rtol=0, atol=0)


@pytest.mark.parametrize("batch,stat", [(1, "l1"), (4, "l1"), (1, "range"), (3, "range")])
def test_network_layer_vs_autograd(batch, stat):
    torch.manual_seed(batch)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), RangeNorm2d(8, 4, stat=stat), nn.ReLU(),
                          nn.Conv2d(8, 4, 3, stride=2, bias=False), RangeNorm2d(4, 2, stat=stat), nn.Flatten(),
                          nn.Linear(4 * 2 * 2, 3)).double()
    with torch.no_grad():
        for mod in model:
            if isinstance(mod, RangeNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_()
    net = from_torch(model, (3, 5, 5))
    assert [l.kind for l in net.layers()].count("rangenorm2d") == 2
    assert isinstance(net.layers()[1], RangeNorm)
    x = torch.randn(batch, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    y = model(x)
    dy = torch.randn_like(y)
    y.backward(dy)
    torch.testing.assert_close(net.forward(x.detach()), y.detach(), rtol=1e-12, atol=1e-12)
    dx = net.backward(dy)
    torch.testing.assert_close(dx, x.grad, rtol=1e-10, atol=1e-12)
    grads = net.named_grads()
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-10, atol=1e-12)


def test_zoo_model_with_range_norm_batch_one():
    from tinycl.models.registry import create
    torch.manual_seed(0)
    model = create("resnet20", norm_layer=range_norm(8))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    net = from_torch(model, (3, 32, 32))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    torch.testing.assert_close(net.predict(x), ref, rtol=1e-4, atol=1e-4)
    from tinycl.kernels.optim import SGD
    loss = net.train_step(x, torch.tensor([3]), SGD(lr=0.01))
    assert math.isfinite(loss)
