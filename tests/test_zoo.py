"""Tests of the model zoo and its registry (tinycl.models.registry, tinycl.models.zoo).

Parameter and MAC counts are checked against arithmetic written out here by hand,
and MobileNetV1 also against the figures published in its paper (Howard et al. 2017,
Tables 6 and 7). MACs are counted by forward hooks from the real tensor shapes:
conv = out_elements * (Cin/groups) * Kh * Kw, linear = in * out (batch 1).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tinycl.errors import TinyclError
from tinycl.models.blocks import Residual
from tinycl.models.registry import create, default_config, list_models, register_model, split_points

BUILTINS = ["ds-cnn", "mobilenet-v1", "resnet18", "resnet20", "resnet8", "tinycl-net", "vgg-cifar"]

ALLOWED = (nn.Conv2d, nn.Linear, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.MaxPool2d, nn.AvgPool2d,
           nn.AdaptiveAvgPool2d, nn.Flatten, nn.BatchNorm2d, nn.Dropout, nn.Sequential, Residual)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def count_macs(model: nn.Module, shape) -> tuple[int, torch.Tensor]:
    """Forward MACs of one sample, counted by hooks from the actual output tensors."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            total += out[0].numel() * (mod.in_channels // mod.groups) * kh * kw
        elif isinstance(mod, nn.Linear):
            total += mod.in_features * mod.out_features

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    with torch.no_grad():
        y = model(torch.randn(1, *shape))
    for h in hs:
        h.remove()
    return total, y


# ---------------------------------------------------------------- hand counts
# Parameters (weights + biases + BatchNorm gamma/beta; running stats are buffers).
PARAMS = {
    # conv 3->8 3x3 with bias: 3*8*9 + 8 = 224; 'valid' 3x3 on 32x32 -> 30x30;
    # fc 8*30*30 -> 10: 7200*10 + 10 = 72010.
    "tinycl-net": 224 + 72010,
    # conv1 1->64 10x4: 640*... = 64*40 = 2560, BN 128;
    # 4 x (dw 64*9 = 576 + BN 128 + pw 64*64 = 4096 + BN 128) = 4 x 4928 = 19712;
    # fc 64*12 + 12 = 780.
    "ds-cnn": 2560 + 128 + 19712 + 780,
    # conv1 3*32*9 = 864 + BN 64;
    # depthwise: channels 32+64+128+128+256+256+6*512+1024 = 4960 -> 9*4960 = 44640, BN 2*4960 = 9920;
    # pointwise: 32*64 + 64*128 + 128*128 + 128*256 + 256*256 + 256*512 + 5*512*512
    #            + 512*1024 + 1024*1024 = 3139584, BN 2*(64+128+128+256+256+6*512+2*1024) = 11904;
    # fc 1024*50 + 50 = 51250.
    "mobilenet-v1": 864 + 64 + 44640 + 9920 + 3139584 + 11904 + 51250,
    # stem 3*16*9 = 432 + BN 32; block1: 2*(16*16*9 + 32) = 4672;
    # block2: 16*32*9 + 64 + 32*32*9 + 64 + shortcut (16*32 + 32 bias) = 14496;
    # block3: 32*64*9 + 128 + 64*64*9 + 128 + shortcut (32*64 + 64) = 57664; fc 64*10 + 10 = 650.
    "resnet8": 464 + 4672 + 14496 + 57664 + 650,
    # stem 464; stage1 3 x 4672 = 14016;
    # stage2: (4608 + 64 + 9216 + 64 + 512 + 64) + 2 x (2 x (9216 + 64)) = 14528 + 37120 = 51648;
    # stage3: (18432 + 128 + 36864 + 128 + 2048 + 128) + 2 x (2 x (36864 + 128)) = 57728 + 147968 = 205696;
    # fc 650.
    "resnet20": 464 + 14016 + 51648 + 205696 + 650,
    # stem 7*7*3*64 = 9408 + BN 128; layer1 4 x (36864 + 128) = 147968;
    # layer2 73728 + 3*147456 + 4*256 + 8192 + 256 = 525568;
    # layer3 294912 + 3*589824 + 4*512 + 32768 + 512 = 2099712;
    # layer4 1179648 + 3*2359296 + 4*1024 + 131072 + 1024 = 8393728; fc 512*1000 + 1000 = 513000.
    "resnet18": 9536 + 147968 + 525568 + 2099712 + 8393728 + 513000,
    # convs 1728 + 36864 + 73728 + 147456 + 294912 + 2*589824 + 1179648 + 5*2359296 = 14710464;
    # BN 2*(2*64 + 2*128 + 3*256 + 6*512) = 8448; fc 512*10 + 10 = 5130.
    "vgg-cifar": 14710464 + 8448 + 5130,
}

# Forward MACs of one sample at the default input (conv + linear only).
MACS = {
    # conv 8*30*30*27 = 194400; fc 7200*10 = 72000.
    "tinycl-net": 194400 + 72000,
    # conv1 64*25*5*40 = 320000; 4 x (dw 64*125*9 = 72000 + pw 64*64*125 = 512000); fc 768.
    "ds-cnn": 320000 + 4 * (72000 + 512000) + 768,
    # 128 -> conv1 (s2) 64x64: 32*4096*27 = 3538944; then per pair (dw + sep), with map size:
    # conv2_1 @64: 1179648 + 8388608; conv2_2 @32: 589824 + 8388608;
    # conv3_1 @32: 1179648 + 16777216; conv3_2 @16: 294912 + 8388608;
    # conv4_1 @16: 589824 + 16777216; conv4_2 @8: 147456 + 8388608;
    # conv5_1..5 @8: 5 x (294912 + 16777216); conv5_6 @4: 73728 + 8388608;
    # conv6 @4: 147456 + 16777216; fc 1024*50 = 51200.
    "mobilenet-v1": (3538944 + 1179648 + 8388608 + 589824 + 8388608 + 1179648 + 16777216
                     + 294912 + 8388608 + 589824 + 16777216 + 147456 + 8388608
                     + 5 * (294912 + 16777216) + 73728 + 8388608 + 147456 + 16777216 + 51200),
    # stem 16*1024*27 = 442368; block1 2 x 16*1024*144 = 4718592;
    # block2 32*256*144 + 32*256*288 + shortcut 32*256*16 = 1179648 + 2359296 + 131072;
    # block3 64*64*288 + 64*64*576 + shortcut 64*64*32 = 1179648 + 2359296 + 131072; fc 640.
    "resnet8": 442368 + 4718592 + 2 * (1179648 + 2359296 + 131072) + 640,
    # stem 442368; stage1 6 x 2359296; stage2 1179648 + 5 x 2359296 + 131072;
    # stage3 1179648 + 5 x 2359296 + 131072; fc 640.
    "resnet20": 442368 + 6 * 2359296 + 2 * (1179648 + 5 * 2359296 + 131072) + 640,
    # stem 64*112*112*147 = 118013952; layer1 4 x 64*56*56*576 = 4 x 115605504;
    # layers 2-4 each: 57802752 + 3 x 115605504 + 6422528; fc 512000.
    "resnet18": 118013952 + 4 * 115605504 + 3 * (57802752 + 3 * 115605504 + 6422528) + 512000,
    # @32: 64*1024*27 + 64*1024*576; @16: 128*256*576 + 128*256*1152;
    # @8: 256*64*1152 + 2 x 256*64*2304; @4: 512*16*2304 + 2 x 512*16*4608; @2: 3 x 512*4*4608; fc 5120.
    "vgg-cifar": (1769472 + 37748736 + 18874368 + 37748736 + 18874368 + 2 * 37748736
                  + 18874368 + 2 * 37748736 + 3 * 9437184 + 5120),
}

SPLITS = {
    "tinycl-net": ["conv", "relu", "flatten", "fc"],
    "ds-cnn": ["conv1", "drop1", "ds1/dw", "ds1/pw", "ds2/dw", "ds2/pw", "ds3/dw", "ds3/pw",
               "ds4/dw", "ds4/pw", "drop2", "pool", "flatten", "fc"],
    "mobilenet-v1": ["conv1", "conv2_1/dw", "conv2_1/sep", "conv2_2/dw", "conv2_2/sep",
                     "conv3_1/dw", "conv3_1/sep", "conv3_2/dw", "conv3_2/sep",
                     "conv4_1/dw", "conv4_1/sep", "conv4_2/dw", "conv4_2/sep",
                     "conv5_1/dw", "conv5_1/sep", "conv5_2/dw", "conv5_2/sep", "conv5_3/dw", "conv5_3/sep",
                     "conv5_4/dw", "conv5_4/sep", "conv5_5/dw", "conv5_5/sep", "conv5_6/dw", "conv5_6/sep",
                     "conv6/dw", "conv6/sep", "pool", "flatten", "fc"],
    "resnet8": ["stem", "block1_1", "block2_1", "block3_1", "pool", "flatten", "fc"],
    "resnet20": ["stem", "block1_1", "block1_2", "block1_3", "block2_1", "block2_2", "block2_3",
                 "block3_1", "block3_2", "block3_3", "pool", "flatten", "fc"],
    "resnet18": ["stem", "maxpool", "block1_1", "block1_2", "block2_1", "block2_2", "block3_1", "block3_2",
                 "block4_1", "block4_2", "pool", "flatten", "fc"],
    "vgg-cifar": ["conv1_1", "conv1_2", "pool1", "conv2_1", "conv2_2", "pool2",
                  "conv3_1", "conv3_2", "conv3_3", "pool3", "conv4_1", "conv4_2", "conv4_3", "pool4",
                  "conv5_1", "conv5_2", "conv5_3", "pool5", "pool", "flatten", "fc"],
}

DEFAULTS = {  # (input_shape, num_classes)
    "tinycl-net": ((3, 32, 32), 10), "ds-cnn": ((1, 49, 10), 12), "mobilenet-v1": ((3, 128, 128), 50),
    "resnet8": ((3, 32, 32), 10), "resnet20": ((3, 32, 32), 10), "resnet18": ((3, 224, 224), 1000),
    "vgg-cifar": ((3, 32, 32), 10),
}


def test_hand_totals():
    # The sums above, written once more as plain numbers (cross-check of the arithmetic).
    assert PARAMS["resnet20"] == 272474 and PARAMS["resnet18"] == 11689512
    assert PARAMS["mobilenet-v1"] == 3258226 and PARAMS["vgg-cifar"] == 14724042
    assert PARAMS["resnet8"] == 77946 and PARAMS["ds-cnn"] == 23180 and PARAMS["tinycl-net"] == 72234
    assert MACS["resnet20"] == 40813184 and MACS["resnet18"] == 1814073344 and MACS["resnet8"] == 12501632
    assert MACS["mobilenet-v1"] == 185427968 and MACS["vgg-cifar"] == 313201664
    assert MACS["ds-cnn"] == 2656768 and MACS["tinycl-net"] == 266400


def test_list_models_has_all_builtins():
    names = list_models()
    assert set(BUILTINS) <= set(names)
    assert names == sorted(names)


@pytest.mark.parametrize("name", BUILTINS)
def test_defaults_params_macs_shape_splits(name):
    model = create(name)
    shape, classes = DEFAULTS[name]
    assert model.input_shape == shape and model.num_classes == classes and model.zoo_name == name
    cfg = default_config(name)
    assert tuple(cfg["input_shape"]) == shape and cfg["num_classes"] == classes
    assert n_params(model) == PARAMS[name]
    assert split_points(model) == SPLITS[name]
    macs, y = count_macs(model, shape)
    assert macs == MACS[name]
    assert y.shape == (1, classes)


@pytest.mark.parametrize("name", BUILTINS)
def test_only_allowed_modules(name):
    model = create(name, input_shape=(3, 64, 64) if name == "resnet18" else None)
    assert isinstance(model, nn.Sequential)
    for parent_name, parent in model.named_modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Identity):
                # only as the identity shortcut / empty post of a Residual
                assert isinstance(parent, Residual) and child_name in ("shortcut", "post"), parent_name
            else:
                assert isinstance(child, ALLOWED), f"{parent_name}.{child_name}: {type(child).__name__}"
            if isinstance(child, nn.AdaptiveAvgPool2d):
                assert child.output_size in (1, (1, 1))


def _conv_then_norm(model):
    """(conv, next sibling) pairs inside each Sequential."""
    for seq in model.modules():
        if isinstance(seq, nn.Sequential):
            kids = list(seq.children())
            for i, k in enumerate(kids):
                if isinstance(k, nn.Conv2d):
                    yield k, kids[i + 1] if i + 1 < len(kids) else None


@pytest.mark.parametrize("name", ["ds-cnn", "resnet20", "resnet8", "tinycl-net"])
def test_norm_none_has_no_bn_and_biased_convs(name):
    model = create(name, norm="none")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.bias is not None for c in convs)


def test_norm_none_param_counts():
    # ds-cnn: conv1 2560 + 64 bias; 4 x (576 + 64 + 4096 + 64); fc 780.
    assert n_params(create("ds-cnn", norm="none")) == 2624 + 4 * 4800 + 780
    # resnet20: conv weights 432 + 6*2304 + (4608 + 5*9216 + 512) + (18432 + 5*36864 + 2048) = 270256,
    # conv biases 16 + 6*16 + 6*32 + 32 + 6*64 + 64 = 784, fc 650.
    assert n_params(create("resnet20", norm="none")) == 270256 + 784 + 650


def test_tinycl_net_defaults_to_no_norm_and_accepts_bn():
    assert not any(isinstance(m, nn.BatchNorm2d) for m in create("tinycl-net").modules())
    m = create("tinycl-net", norm="bn")
    assert split_points(m) == ["conv", "norm", "relu", "flatten", "fc"]
    assert m.conv.bias is None and isinstance(m.norm, nn.BatchNorm2d)


@pytest.mark.parametrize("name", ["resnet20", "mobilenet-v1", "ds-cnn", "vgg-cifar", "resnet8"])
def test_norm_layer_override(name):
    kw = {"width": 0.25} if name in ("mobilenet-v1", "vgg-cifar") else {}
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in create(name, **kw).modules())
    model = create(name, norm_layer=lambda c: nn.GroupNorm(1, c), **kw)
    assert sum(isinstance(m, nn.GroupNorm) for m in model.modules()) == n_bn > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    for conv, nxt in _conv_then_norm(model):
        assert (conv.bias is None) == isinstance(nxt, nn.GroupNorm)
    shape = model.input_shape
    _, y = count_macs(model, shape)
    assert y.shape == (1, model.num_classes)


def test_mobilenet_latent_conv5_4_dw():
    model = create("mobilenet-v1")
    names = split_points(model)
    assert names.index("conv5_4/dw") == 19
    front = nn.Sequential(*list(model.children())[:20])  # up to and including conv5_4/dw
    front.eval()
    with torch.no_grad():
        z = front(torch.randn(1, 3, 128, 128))
    assert z.shape == (1, 512, 8, 8) and z[0].numel() == 32768  # field notes: 8x8x512


@pytest.mark.parametrize("width,res,mmacs,mparams", [
    # Howard et al. 2017, Table 6 (width at 224) and Table 7 (resolution at width 1.0); 1000 classes.
    (1.0, 224, 569, 4.2), (0.75, 224, 325, 2.6), (0.5, 224, 149, 1.3), (0.25, 224, 41, 0.5),
    (1.0, 160, 290, 4.2), (1.0, 128, 186, 4.2),
])
def test_mobilenet_matches_paper(width, res, mmacs, mparams):
    model = create("mobilenet-v1", num_classes=1000, input_shape=(3, res, res), width=width)
    macs, _ = count_macs(model, (3, res, res))
    # The paper rounds inconsistently (568.7M -> 569, 290.7M -> 290), so allow < 1M.
    assert abs(macs / 1e6 - mmacs) < 1.0
    assert round(n_params(model) / 1e6, 1) == mparams


def test_resnet18_matches_torchvision_figure():
    # torchvision's published ResNet-18: 11,689,512 params, 1.814 GMACs at 224x224.
    assert n_params(create("resnet18")) == 11689512


def test_resnet20_option_b_vs_option_a():
    # Option A (zero-pad shortcut) ResNet-20 has 269,722 params; option B adds the two 1x1 convs + BN:
    # (16*32 + 2*32) + (32*64 + 2*64) = 576 + 2176.
    assert n_params(create("resnet20")) == 269722 + 576 + 2176


@pytest.mark.parametrize("name,shape", [
    ("resnet20", (3, 40, 24)), ("resnet8", (3, 17, 33)), ("mobilenet-v1", (3, 96, 80)),
    ("ds-cnn", (1, 61, 13)), ("vgg-cifar", (3, 64, 48)), ("tinycl-net", (1, 28, 28)), ("resnet18", (3, 64, 96)),
])
def test_non_default_input(name, shape):
    kw = {"width": 0.25} if name in ("mobilenet-v1", "vgg-cifar") else {}
    model = create(name, input_shape=shape, num_classes=7, **kw)
    _, y = count_macs(model, shape)
    assert y.shape == (1, 7)


# ---------------------------------------------------------------- odd shapes
@settings(max_examples=12, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), k=st.integers(1, 5), c=st.integers(1, 4))
def test_tinycl_net_odd_sizes(h, w, k, c):
    if h < k or w < k:  # a 'valid' kxk conv needs at least k pixels
        with pytest.raises(TinyclError):
            create("tinycl-net", input_shape=(c, h, w), kernel=k)
        return
    model = create("tinycl-net", input_shape=(c, h, w), kernel=k)
    assert model.fc.in_features == 8 * (h - k + 1) * (w - k + 1)
    _, y = count_macs(model, (c, h, w))
    assert y.shape == (1, 10)


@settings(max_examples=10, deadline=None)
@given(h=st.integers(8, 70), w=st.integers(8, 70))
def test_vgg_odd_sizes(h, w):
    if min(h, w) < 32:  # five 2x2 max pools need 32 pixels
        with pytest.raises(TinyclError, match="too small"):
            create("vgg-cifar", input_shape=(3, h, w), width=0.125)
        return
    model = create("vgg-cifar", input_shape=(3, h, w), width=0.125)
    _, y = count_macs(model, (3, h, w))
    assert y.shape == (1, 10)


@settings(max_examples=10, deadline=None)
@given(h=st.integers(1, 60), w=st.integers(1, 12))
def test_ds_cnn_odd_sizes(h, w):
    if w < 2:  # 10x4 stride-2 conv with column padding 1 needs 2 columns
        with pytest.raises(TinyclError):
            create("ds-cnn", input_shape=(1, h, w))
        return
    model = create("ds-cnn", input_shape=(1, h, w))
    _, y = count_macs(model, (1, h, w))
    assert y.shape == (1, 12)


@settings(max_examples=10, deadline=None)
@given(name=st.sampled_from(["resnet8", "resnet20", "mobilenet-v1"]), h=st.integers(1, 48), w=st.integers(1, 48))
def test_padded_models_any_size(name, h, w):
    # 3x3 convs with padding 1 never shrink a map below 1 pixel, so every size works.
    kw = {"width": 0.25} if name == "mobilenet-v1" else {}
    model = create(name, input_shape=(3, h, w), **kw)
    _, y = count_macs(model, (3, h, w))
    assert y.shape == (1, model.num_classes)


# ---------------------------------------------------------------- errors
def test_unknown_model_lists_available():
    with pytest.raises(TinyclError) as e:
        create("resnet9000")
    msg = str(e.value)
    assert "resnet9000" in msg and all(n in msg for n in BUILTINS) and "\n" not in msg


@pytest.mark.parametrize("kwargs,needle", [
    ({"input_shape": (3, 16, 16)}, "too small"),
    ({"input_shape": (3, 32)}, "input_shape"),
    ({"input_shape": (3, 0, 32)}, "input_shape"),
    ({"num_classes": 0}, "num_classes"),
    ({"norm": "layernorm"}, "norm"),
    ({"width": 0}, "width"),
    ({"width": -1.0}, "width"),
    ({"depth": 19}, "depth"),
])
def test_bad_arguments_raise_tinycl_error(kwargs, needle):
    with pytest.raises(TinyclError, match=needle):
        create("vgg-cifar", **kwargs)


def test_split_points_needs_sequential():
    with pytest.raises(TinyclError):
        split_points(nn.Conv2d(1, 1, 1))


def test_register_custom_model():
    name = "test-zoo-custom"

    @register_model(name)
    def _tiny(num_classes=3, input_shape=(2, 4, 4), norm="bn", norm_layer=None):
        return nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, num_classes))

    try:
        assert name in list_models()
        m = create(name, num_classes=5)
        assert m(torch.zeros(1, 2, 4, 4)).shape == (1, 5)
        assert split_points(m) == ["0", "1"]
        with pytest.raises(TinyclError):  # input 2x3x3 does not match Linear(32, .)
            create(name, input_shape=(2, 3, 3))
        with pytest.raises(TinyclError):  # a different builder under the same name
            register_model(name)(lambda **k: nn.Sequential())
    finally:
        from tinycl.models import registry
        registry._REGISTRY.pop(name, None)
