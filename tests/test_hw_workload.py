"""MAC counts of the workload against counts worked out by hand."""

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from tinycl.errors import TinyclError, UnsupportedLayerError
from tinycl.hw.workload import build_workload
from tinycl.models.blocks import Residual


def seq(**children):
    m = nn.Sequential()
    for k, v in children.items():
        m.add_module(k, v)
    return m


def by_name(w):
    return {l.name: l for l in w.layers}


def test_small_cnn_by_hand():
    m = seq(conv=nn.Conv2d(3, 8, 3, padding=1), bn=nn.BatchNorm2d(8), relu=nn.ReLU(),
            pool=nn.MaxPool2d(2), flat=nn.Flatten(), fc=nn.Linear(8 * 4 * 4, 10))
    w = build_workload(m, (3, 8, 8), None, "fp32", batch=2)
    L = by_name(w)
    # conv: 2 samples x 8 out ch x 8x8 x (3*3*3) = 27648; first layer needs no input gradient
    assert L["conv"].macs == {"forward": 27648, "backward_input": 0, "backward_weight": 27648,
                              "update": 8 * 27 + 8}
    e = 2 * 8 * 8 * 8   # BN / ReLU output elements = 1024
    assert L["bn"].macs == {"forward": 2 * e, "backward_input": 3 * e, "backward_weight": e, "update": 16}
    assert L["relu"].macs == {"forward": e, "backward_input": e, "backward_weight": 0, "update": 0}
    assert L["pool"].macs == {"forward": 2 * 8 * 4 * 4 * 4, "backward_input": 2 * 8 * 16,
                              "backward_weight": 0, "update": 0}
    assert L["fc"].macs == {"forward": 2 * 128 * 10, "backward_input": 2560, "backward_weight": 2560,
                            "update": 1290}
    assert sum(L["flat"].macs.values()) == 0
    # bytes of the conv forward: input 2*3*64*4 + weights 224*4 read, output 2*8*64*4 written
    assert L["conv"].bytes_read["forward"] == 2 * 3 * 64 * 4 + 224 * 4
    assert L["conv"].bytes_written["forward"] == 2 * 8 * 64 * 4


def test_frozen_front_is_int8_forward_only():
    m = seq(c1=nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()),
            c2=nn.Conv2d(4, 4, 3, bias=False), fc=nn.Sequential(nn.Flatten(), nn.Linear(4 * 2 * 2, 3)))
    w = build_workload(m, (1, 6, 6), "c1", "fp16", batch=4, n_replays=6, lr_bits=4)
    L = by_name(w)
    assert L["c1.0"].frozen and L["c1.2"].frozen and not L["c2"].frozen
    # frozen conv runs on one sample at a time: 4*4*4*9 = 576, no backward
    assert L["c1.0"].macs == {"forward": 576, "backward_input": 0, "backward_weight": 0, "update": 0}
    assert sum(L["c1.1"].macs.values()) == 0                # BN folded into the INT8 conv
    assert L["c1.0"].bytes_written["forward"] == 4 * 16     # 1 byte per element
    # first trainable layer: no input gradient; step = 4 samples: 4*4*2*2*4*9 = 2304
    assert L["c2"].macs == {"forward": 2304, "backward_input": 0, "backward_weight": 2304, "update": 144}
    assert L["fc.1"].macs["backward_input"] == 4 * 16 * 3
    assert w.latent_elements == 4 * 4 * 4 and w.steps == 3   # ceil((4 + 6) / 4)
    assert w.replay_memory_bytes() == 6 * 64 * 4 // 8          # 192 bytes at 4 bits
    assert w.replay_traffic_bytes() == {"read": 192, "written": 128}


def test_depthwise_strided_asymmetric_and_residual():
    body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(), nn.Conv2d(8, 8, 1))
    m = seq(stem=nn.Conv2d(1, 8, (10, 4), stride=(2, 2), padding=(5, 1)),
            block=Residual(body, post=nn.ReLU()))
    w = build_workload(m, (1, 49, 10), None, "fp32", batch=1)
    L = by_name(w)
    ho, wo = (49 + 10 - 10) // 2 + 1, (10 + 2 - 4) // 2 + 1      # 25 x 5
    assert L["stem"].macs["forward"] == 8 * ho * wo * 40
    assert L["block.body.0"].primitive == "depthwise"
    assert L["block.body.0"].macs["forward"] == 8 * ho * wo * 9
    assert L["block.body.2"].primitive == "pointwise"
    assert L["block.body.2"].macs["backward_input"] == 8 * 8 * ho * wo
    assert L["block.add"].macs["forward"] == 8 * ho * wo
    names = [l.name for l in w.layers]
    assert names.index("block.add") < names.index("block.post")


@settings(max_examples=15, deadline=None)
@given(cin=st.integers(1, 6), cout=st.integers(1, 6), k=st.integers(1, 4), s=st.integers(1, 3),
       p=st.integers(0, 2), h=st.integers(5, 12), n=st.integers(1, 3), dw=st.booleans())
def test_conv_forward_macs_match_output_shape(cin, cout, k, s, p, h, n, dw):
    g = cin if dw else 1
    cout = cin if dw else cout
    conv = nn.Conv2d(cin, cout, k, stride=s, padding=p, groups=g)
    m = seq(pre=nn.Linear(h, h), conv=conv)
    w = build_workload(m, (cin, h, h), None, "fp32", batch=n)
    out = conv(torch.zeros(1, cin, h, h))
    expect = n * out.numel() * (cin // g) * k * k
    L = by_name(w)["conv"]
    assert L.macs["forward"] == L.macs["backward_input"] == L.macs["backward_weight"] == expect


def test_zoo_resnet8_conv_macs_by_hand():
    from tinycl.models.registry import create
    net = create("resnet8")
    w = build_workload(net, net.input_shape, None, "fp32")
    conv = sum(l.macs["forward"] for l in w.layers if l.primitive in ("conv", "pointwise", "linear"))
    # stem 32*32*16*27 + stack1 2*(32*32*16*144) + stack2 (16*16*32*(144+288) + 16*16*32*16)
    # + stack3 (8*8*64*(288+576) + 8*8*64*32) + fc 640
    hand = 442368 + 4718592 + (1179648 + 2359296 + 131072) + (1179648 + 2359296 + 131072) + 640
    assert conv == hand == 12501632


def test_errors_are_clear():
    m = seq(a=nn.Linear(4, 4), b=nn.Linear(4, 2))
    with pytest.raises(TinyclError, match=r"no layer named .zz.; split points: a "):
        build_workload(m, (4,), "zz")
    with pytest.raises(TinyclError, match="precision"):
        build_workload(m, (4,), None, "fp8")
    with pytest.raises(TinyclError, match="input shape"):
        build_workload(m, (5,), None)
    with pytest.raises(UnsupportedLayerError, match="LSTM"):
        build_workload(seq(r=nn.LSTM(4, 4)), (2, 4), None)


def test_int8_policy_one_byte_and_depthwise_im2row_by_hand():
    m = seq(pre=nn.Conv2d(2, 2, 1), dw=nn.Conv2d(2, 2, 3, padding=1, groups=2, bias=False))
    w8 = build_workload(m, (2, 5, 5), None, "int8")
    w32 = build_workload(m, (2, 5, 5), None, "fp32")
    dw8, dw32 = by_name(w8)["dw"], by_name(w32)["dw"]
    # forward reads x (2*25) + W (18) elements, writes y (50): 1 byte each in int8, 4 in fp32
    assert dw8.bytes_read["forward"] == 68 and dw32.bytes_read["forward"] == 4 * 68
    assert dw8.bytes_written["forward"] == 50
    # im2row of the depthwise: 25 pixels x 9 taps x 2 channels, for forward, weight and input grads
    assert dw8.scratch_bytes["forward"] == dw8.scratch_bytes["backward_weight"] == 450
    assert dw8.scratch_bytes["backward_input"] == 450 and dw32.scratch_bytes["forward"] == 1800


def test_split_outputs_and_two_tensor_products_in_the_workload():
    """A split (chunk) and its getitems, and matmul / attention between activations: the workload
    builds (a split's outputs count as one flat tensor), and a product of two tensors is a GEMM
    ("linear") with its MACs counted by hand."""
    import torch.nn.functional as F


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(8, 24)
            self.fc = nn.Linear(8, 3)

        def forward(self, x):                       # x: (B, 5, 8) tokens
            q, k, v = self.qkv(x).chunk(3, -1)
            s = (q @ k.transpose(-2, -1)).softmax(-1) @ v + F.scaled_dot_product_attention(q, k, v)
            return self.fc(s.mean(1))

    w = build_workload(Net(), (5, 8), batch=2)
    layers = by_name(w)
    split = next(l for l in w.layers if l.type == "split")
    assert split.out_shape == (5 * 24,)
    mm = [l for l in w.layers if l.type == "matmul"]
    assert [l.primitive for l in mm] == ["linear", "linear"]
    assert mm[0].geom["cin"] == 8 and mm[0].geom["cout"] == 5
    assert mm[0].macs["forward"] == 2 * 5 * 5 * 8               # (5 x 8) @ (8 x 5) per sample
    att = next(l for l in w.layers if l.type == "sdpa")
    assert att.primitive == "linear" and att.macs["forward"] == 2 * (5 * 5 * 8 + 5 * 5 * 8)
    assert layers["qkv"].macs["forward"] == 2 * 5 * 8 * 24
