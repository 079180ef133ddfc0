"""from_torch networks: forward, backward and named_grads against autograd (float64), every zoo model."""

import pytest
import torch
from torch import nn

from tinycl import from_torch
from tinycl.errors import TinyclError, UnsupportedLayerError
from tinycl.kernels.optim import SGD
from tinycl.models.blocks import Residual
from tinycl.models.registry import create, list_models

D = torch.float64

ZOO_CASES = {  # small but structurally complete instances, so float64 autograd stays fast
    "tinycl-net": {},
    "mobilenet-v1": dict(width=0.25, input_shape=(3, 32, 32)),
    "resnet8": {},
    "ds-cnn": {},
    "resnet20": {},
    "vgg-cifar": dict(width=0.125),
    "resnet18": dict(input_shape=(3, 64, 64)),
}


def autograd_reference(model, x, dy):
    xr = x.clone().requires_grad_(True)
    model.zero_grad()
    y = model(xr)
    y.backward(dy)
    return y.detach(), xr.grad, {k: p.grad for k, p in model.named_parameters()}


def check_against_autograd(model, input_shape, batch=2, impl="aten", tol=1e-9, channels_last=None):
    torch.manual_seed(0)
    model = model.to(D).train()
    for m in model.modules():  # non-trivial BN statistics and affine parameters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(); m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_(1, 0.2); m.bias.data.normal_(0, 0.2)
        if isinstance(m, nn.Dropout):
            m.p = 0.0  # random masks differ from torch's; dropout is checked on its own
    net = from_torch(model, input_shape, impl=impl, channels_last=channels_last)
    net.train()
    x = torch.randn(batch, *input_shape, dtype=D)
    y = net.forward(x)
    dy = torch.randn_like(y)
    dx = net.backward(dy)
    y_ref, dx_ref, grads_ref = autograd_reference(model, x, dy)  # after ours: same BN running-stat update
    scale = lambda t: t.abs().max().clamp_min(1e-3)  # noqa: E731
    assert (y - y_ref).abs().max() <= tol * scale(y_ref)
    assert (dx - dx_ref).abs().max() <= tol * scale(dx_ref)
    grads = net.named_grads()
    assert set(grads) == set(grads_ref), set(grads) ^ set(grads_ref)
    # A gradient that is exactly zero in exact arithmetic (the bias of a BN followed by a training-mode
    # BN) comes out as rounding noise of the model's gradient magnitudes: floor the scale there.
    floor = 1e-7 * max(float(g.abs().max()) for g in grads_ref.values())
    for k in grads_ref:
        assert (grads[k] - grads_ref[k]).abs().max() <= tol * max(scale(grads_ref[k]), floor), k
    return net


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("name", sorted(ZOO_CASES))
def test_zoo_model_matches_autograd(name, channels_last):
    kw = dict(ZOO_CASES[name])
    model = create(name, **kw)
    net = check_against_autograd(model, model.input_shape, channels_last=channels_last)
    w4 = [p for p in net.named_parameters().values() if p.dim() == 4]
    unambiguous = [p for p in w4 if p.shape[1] > 1 and p.shape[2:] != (1, 1)]  # else both layouts coincide
    assert all(p.is_contiguous(memory_format=torch.channels_last) == channels_last for p in unambiguous)


def test_every_registered_model_is_covered():
    assert set(list_models()) <= set(ZOO_CASES)


@pytest.mark.parametrize("impl", ["aten", "im2col"])
def test_nested_residual_net_both_impls(impl):
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
        Residual(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.LeakyReLU(0.2), nn.Conv2d(8, 8, 1)),
                 post=nn.ReLU()),
        nn.Sequential(nn.MaxPool2d(2), nn.AvgPool2d(2, 1, 1)),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.0), nn.Linear(8, 5))
    check_against_autograd(model, (3, 11, 9), batch=3, impl=impl)


def test_training_step_matches_torch_sgd_and_state_roundtrip():
    torch.manual_seed(1)
    model = create("tinycl-net").to(D)
    ref = create("tinycl-net").to(D)
    ref.load_state_dict(model.state_dict())
    net = from_torch(model, model.input_shape)
    opt = SGD(lr=0.05, momentum=0.9, weight_decay=1e-4)
    topt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    x, y = torch.randn(4, *model.input_shape, dtype=D), torch.randint(0, 10, (4,))
    for _ in range(3):
        net.train_step(x, y, opt)
        topt.zero_grad()
        nn.functional.cross_entropy(ref(x), y).backward()
        topt.step()
    for k, v in ref.state_dict().items():
        assert torch.allclose(net.state_dict()[k].to(v.dtype), v, atol=1e-10), k
    fresh = create("tinycl-net").to(D)
    net.export_to(fresh)
    assert torch.allclose(fresh(x), ref(x))


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_low_precision_training_lowers_loss_and_stays_in_format(precision):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 4))
    net = from_torch(model, (3, 8, 8), precision=precision)
    x = torch.randn(32, 3, 8, 8)
    y = (x[:, 0].mean((1, 2)) > 0).long() + 2 * (x[:, 1].mean((1, 2)) > 0).long()
    opt = SGD(lr=0.5, momentum=0.9)
    first = net.train_step(x, y, opt)
    for _ in range(40):
        last = net.train_step(x, y, opt)
    assert last < 0.7 * first
    out = net.predict(x)
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    assert torch.equal(out, out.to(dtype).float())  # activations hold format values


def test_fp16_loss_scaling_skips_overflowing_step():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    net = from_torch(model, (4,), precision="fp16")
    before = net.state_dict()["1.weight"].clone()
    net.scaler.scale = 2.0 ** 40  # guaranteed overflow of FP16 gradients
    net.train_step(torch.randn(8, 4) * 100, torch.randint(0, 2, (8,)), SGD(lr=0.1))
    assert torch.equal(net.state_dict()["1.weight"], before)
    assert net.scaler.scale == 2.0 ** 39 and net.scaler.skipped == 1


def test_unsupported_layer_is_named():
    class Erf(nn.Module):
        def forward(self, x):
            return torch.erf(x)

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(Erf()))
    with pytest.raises(UnsupportedLayerError, match=r"op 'erf' in module '1\.0' \(Erf\) .*test_network.py:\d+"):
        from_torch(model, (1, 5, 5))
    with pytest.raises(UnsupportedLayerError, match="padding_mode='reflect'"):
        from_torch(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect")), (1, 9, 9))


def test_bad_inputs_raise_clear_errors():
    net = from_torch(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), (3, 2, 2))
    with pytest.raises(TinyclError, match="expects"):
        net.forward(torch.randn(2, 3, 3, 2))
    x = torch.randn(2, 3, 2, 2)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(TinyclError, match="NaN"):
        net.forward(x)
    with pytest.raises(TinyclError, match="input shape"):
        from_torch(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), (3, 5, 5))


def test_nested_residual_whose_inner_body_passes_the_gradient_through():
    # the inner body returns dy itself; an in-place sum would corrupt the outer block's dy
    # before the outer shortcut reads it
    inner = Residual(nn.Sequential(nn.Identity()), shortcut=nn.Conv2d(3, 3, 1))
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), Residual(inner, post=nn.ReLU()),
                          nn.Flatten(), nn.Linear(75, 2))
    check_against_autograd(model, (2, 5, 5), batch=2)


def test_training_on_the_shipped_real_data_lowers_the_loss():
    from tinycl.cl.backbone import normalizer, to_input
    from tinycl.data import load
    ds = load("shipped")
    torch.manual_seed(0)
    x8, y = ds.train.x[:512], ds.train.y[:512]
    mean, std = normalizer(x8)
    x = to_input(x8, mean, std)
    net = from_torch(create("resnet8"), (3, 32, 32))
    opt = SGD(lr=0.05, momentum=0.9)
    losses = [net.train_step(x[i:i + 64], y[i:i + 64], opt) for _ in range(3) for i in range(0, 512, 64)]
    assert sum(losses[-8:]) / 8 < 0.9 * sum(losses[:8]) / 8


@pytest.mark.parametrize("stochastic", [False, True])
def test_fp16_without_master_weights_keeps_weights_in_fp16(stochastic):
    from tinycl.numerics.precision import get_precision
    prec = get_precision("fp16", master_weights=False, stochastic=stochastic, loss_scale=None)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    net = from_torch(model, (3, 8, 8), precision=prec)
    net.generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 3, (16,))
    first = net.train_step(x, y, SGD(lr=0.1))
    opt = SGD(lr=0.1)
    for _ in range(20):
        last = net.train_step(x, y, opt)
    assert last < first
    for v in net.named_parameters().values():
        assert torch.equal(v, v.half().float())  # stored in FP16, no hidden FP32 copy


@pytest.mark.parametrize("batch", [1, 3])  # frozen statistics make batch 1 work
def test_frozen_submodules_are_respected_and_flags_kept(batch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 3)).to(D)
    model.train()
    model[1].eval()  # the usual way to freeze BN statistics
    model[3].eval()
    model[1].running_mean.normal_()
    net = from_torch(model, (2, 6, 6))
    assert [m.training for m in model] == [True, False, True, False, True, True]  # not clobbered
    net.train()
    x = torch.randn(batch, 2, 6, 6, dtype=D)
    y = net.forward(x)
    dy = torch.randn_like(y)
    dx = net.backward(dy)
    y_ref, dx_ref, g_ref = autograd_reference(model, x, dy)
    assert torch.allclose(y, y_ref) and torch.allclose(dx, dx_ref)
    assert all(torch.allclose(net.named_grads()[k], g_ref[k]) for k in g_ref)


def test_subclass_with_its_own_forward_is_traced_through():
    class Scaled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    check_against_autograd(nn.Sequential(nn.Flatten(), Scaled(4, 2)), (4,))


_FAULTS = """
import resource, sys, torch
torch.set_num_threads(1)
from tinycl import from_torch
from tinycl.kernels import loss as LOSS
from tinycl.kernels.allocator import keep_freed_memory
from tinycl.kernels.optim import SGD
from tinycl.models.registry import create
net, opt = from_torch(create("resnet8"), (3, 32, 32)), SGD(lr=0.01, momentum=0.9)
g = torch.Generator().manual_seed(0)
data = [(torch.randn(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g)) for _ in range(4)]
def step(i):
    x, y = data[i % 4]
    _, p = LOSS.cross_entropy_forward(net.forward(x), y)
    net.backward(LOSS.cross_entropy_backward(p, y), need_input=False)
    net.step(opt)
for i in range(3):
    step(i)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(5):
    step(i)
print(keep_freed_memory(), (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


def test_training_steps_do_not_page_fault_their_memory_in_again():
    """glibc's malloc, as tinycl sets it, keeps each step's freed activations and gradients mapped:
    ResNet-8 at batch 32 takes thousands of minor page faults per step with glibc's defaults
    (``TINYCL_MALLOC=default``) and next to none as a Network sets it (docs/benchmarks.md)."""
    import os
    import platform
    import subprocess
    import sys

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the allocator settings apply to glibc only")
    got = {}
    for mode in ("tinycl", "default"):
        env = dict(os.environ, TINYCL_MALLOC=mode)
        for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"):
            env.pop(k, None)
        out = subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True, text=True, check=True)
        applied, faults = out.stdout.split()
        got[mode] = (applied == "True", float(faults))
    assert got["tinycl"][0] and not got["default"][0]
    assert got["default"][1] > 500 and got["tinycl"][1] < got["default"][1] / 20, got
