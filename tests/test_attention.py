"""Attention: matmul of two activations, softmax and scaled dot-product attention kernels vs torch
autograd in float64 (hypothesis), their engine ops in captured graphs, and reshapes that fold the batch."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from test_kernels_graph_ops import close, rand
from test_kernels_graph_ops import grads_of as autograd
from tinycl.errors import TinyclError
from tinycl.kernels import attention as K

D = torch.float64


@st.composite
def matmul_shapes(draw):
    """Operand shapes of a valid ``a @ b``: ranks 1 to 4, leading dims that broadcast."""
    m, k, n = (draw(st.integers(1, 5)) for _ in range(3))
    lead = [draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 2)))]

    def batch():
        cut = draw(st.integers(0, len(lead)))
        return [1 if draw(st.booleans()) else s for s in lead[cut:]]

    ra, rb = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    a = [k] if ra == 1 else batch() + [m, k]
    b = [k] if rb == 1 else batch() + [k, n]
    return tuple(a), tuple(b)


@given(matmul_shapes(), st.integers(0, 1000))
def test_matmul_of_two_activations_matches_autograd(shapes, seed):
    sa, sb = shapes
    a, b = rand(sa, seed), rand(sb, seed + 1)
    y_ref, dy, (ga, gb) = autograd(torch.matmul, a, b, seed=seed + 2)
    close(K.matmul_forward(a, b), y_ref)
    da, db = K.matmul_backward(dy, a, b)
    close(da, ga)
    close(db, gb)
    assert K.matmul_backward(dy, a, b, need_a=False)[0] is None


def test_matmul_refuses_mismatched_inner_sizes():
    with pytest.raises(TinyclError, match="inner sizes differ"):
        K.matmul_forward(torch.ones(2, 3), torch.ones(4, 2))


@given(st.lists(st.integers(1, 4), min_size=1, max_size=4), st.integers(0, 1000), st.data())
def test_softmax_along_any_dim_matches_autograd(shape, seed, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = rand(shape, seed, 3.0)
    y_ref, dy, (gx,) = autograd(lambda t: torch.softmax(t, dim), x, seed=seed + 1)
    y = K.softmax_forward(x, dim)
    close(y, y_ref)
    close(K.softmax_backward(dy, y, dim), gx)


@st.composite
def sdpa_case(draw):
    lead = [draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 2)))]
    L, S, E, Ev = (draw(st.integers(1, 5)) for _ in range(4))
    kv_lead = [1 if draw(st.booleans()) else s for s in lead]   # keys / values broadcast over heads
    mask = draw(st.sampled_from(["none", "float", "float_row", "bool", "causal"]))
    scale = draw(st.sampled_from([None, 0.3]))
    return tuple(lead + [L, E]), tuple(kv_lead + [S, E]), tuple(kv_lead + [S, Ev]), mask, scale


@given(sdpa_case(), st.integers(0, 1000))
def test_sdpa_matches_autograd(case, seed):
    sq, sk, sv, mask, scale = case
    q, k, v = rand(sq, seed), rand(sk, seed + 1), rand(sv, seed + 2)
    L, S = sq[-2], sk[-2]
    m, causal = None, mask == "causal"
    if mask == "float":
        m = rand((L, S), seed + 3)
    elif mask == "float_row":
        m = rand((*sq[:-2], 1, S), seed + 3)
    elif mask == "bool":
        m = torch.rand(L, S, generator=torch.Generator().manual_seed(seed)) > 0.3
        m[:, 0] = True   # no fully masked row (torch gives NaN there)

    def ref(q, k, v, m):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=m, is_causal=causal, scale=scale)

    y_ref, dy, (gq, gk, gv, gm) = autograd(ref, q, k, v, m, seed=seed + 4)
    y, p = K.sdpa_forward(q, k, v, m, causal, scale)
    close(y, y_ref)
    float_mask = m is not None and m.is_floating_point()
    dq, dk, dv, dm = K.sdpa_backward(dy, q, k, v, p, scale, m.shape if float_mask else None)
    close(dq, gq)
    close(dk, gk)
    close(dv, gv)
    if float_mask:
        close(dm, gm)


def test_sdpa_refuses_mask_and_causal_together():
    q = torch.ones(2, 3, 4)
    with pytest.raises(TinyclError, match="not both"):
        K.sdpa_forward(q, q, q, torch.zeros(3, 3), True)


# ---------------------------------------------------------------------------------------------
# captured graphs: attention blocks, folded batches, real models
# ---------------------------------------------------------------------------------------------

from torch import nn  # noqa: E402

from test_network import autograd_reference, check_against_autograd  # noqa: E402
from tinycl import from_torch  # noqa: E402
from tinycl.errors import UnsupportedLayerError  # noqa: E402
from tinycl.graph import capture  # noqa: E402


def worst_error(net, model, x) -> float:
    """Largest relative error of the output, input gradient and parameter gradients of ``net``
    against autograd on ``model`` (both in training mode, one step on ``x``)."""
    net.zero_grad()
    y = net.forward(x)
    dy = torch.randn_like(y)
    dx = net.backward(dy)
    y_ref, dx_ref, g_ref = autograd_reference(model, x, dy)
    grads = net.named_grads()
    assert set(grads) == set(g_ref)
    # a gradient that is zero in exact arithmetic (a BN bias before a training-mode BN) is rounding
    # noise: its scale is floored as in test_network.check_against_autograd
    floor = 1e-7 * max(float(g.abs().max()) for g in g_ref.values())
    rel = lambda a, b, f=1e-12: float((a - b).abs().max()) / max(float(b.abs().max()), f)  # noqa: E731
    return max([rel(y, y_ref), rel(dx, dx_ref)] + [rel(grads[k], g_ref[k], floor) for k in g_ref])


def check_two_batches(model, input_shape, tol=1e-6, batches=(2, 5)):
    """Autograd agreement (float64) of one captured graph at two batch sizes; returns the graph."""
    net = check_against_autograd(model, input_shape, batch=batches[0], tol=tol)
    for b in batches[1:]:
        err = worst_error(net, model, torch.randn(b, *input_shape, dtype=D))
        assert err <= tol, (b, err)
    return net


class Heads(nn.Module):
    """A user-written transformer block: fused qkv to (3, B, H, N, D) heads, explicit attention
    with @ and softmax, SDPA with a causal and with a float mask, heads folded into the batch."""

    def __init__(self, d=16, h=4, n=5):
        super().__init__()
        self.h = h
        self.ln, self.qkv, self.proj = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.bias = nn.Parameter(torch.randn(n, n))
        self.register_buffer("mask", torch.randn(n, n))

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(self.ln(x)).reshape(B, N, 3, self.h, C // self.h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        a = ((q @ k.transpose(-2, -1)) * 0.5 + self.bias).softmax(dim=-1)
        y = (a @ v).transpose(1, 2).reshape(B, N, C)
        y2 = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B * N, C)
        qf = q.reshape(B * self.h, N, C // self.h)          # heads folded into the batch
        y3 = F.scaled_dot_product_attention(qf, k.flatten(0, 1), v.flatten(0, 1), attn_mask=self.mask)
        y3 = torch.bmm(y3, v.flatten(0, 1).transpose(1, 2)).view(B, self.h, N, N).mean(1)
        return x + self.proj(y) + self.proj(y2).view(B, N, C) + y3[..., :1]


def test_user_transformer_block_matches_autograd_at_two_batch_sizes():
    net = check_two_batches(Heads(), (5, 16), tol=1e-9)
    ops = {n.op for n in net.graph.nodes}
    assert {"matmul", "sdpa", "softmax", "permute", "split"} <= ops
    folded = [n for n in net.graph.nodes if n.batch is not None]
    assert folded and all(n.name not in net.graph.cut_points() for n in folded)


class Patches(nn.Module):
    """MobileViT-style unfold / fold of patches: the batch folded into the first dim and back."""

    def __init__(self, c=4, p=2):
        super().__init__()
        self.c, self.p = c, p
        self.conv = nn.Conv2d(c, c, 1)
        self.fc = nn.Linear(c, c)

    def forward(self, x):
        B, C, H, W = x.shape
        p, nh, nw = self.p, H // self.p, W // self.p
        t = x.reshape(B * C * nh, p, nw, p).transpose(1, 2)
        t = t.reshape(B, C, nh * nw, p * p).transpose(1, 3).reshape(B * p * p, nh * nw, C)
        t = self.fc(t).softmax(-1)
        t = t.contiguous().view(B, p * p, nh * nw, C).transpose(1, 3).reshape(B * C * nh, nw, p, p)
        return self.conv(t.transpose(1, 2).reshape(B, C, H, W))


def test_patch_unfold_and_fold_with_a_folded_batch():
    check_two_batches(Patches(), (4, 6, 4), tol=1e-9)


def test_mixing_samples_is_refused():
    class Mix(nn.Module):
        def forward(self, x):                       # (B, 4, 6) -> (4, B, 6) -> (4B, 6): samples interleaved
            return x.transpose(0, 1).reshape(-1, 6).reshape(x.shape[0], 24)

    with pytest.raises(UnsupportedLayerError, match="mixes the samples of the batch"):
        capture(nn.Sequential(nn.Linear(6, 6), Mix()), (4, 6))

    class Orders(nn.Module):
        def forward(self, x):                       # samples in blocks + samples alternating
            return x.reshape(-1, 6) + x.transpose(0, 1).reshape(-1, 6)

    with pytest.raises(UnsupportedLayerError, match=r"op 'add' .*mixes the samples"):
        capture(Orders(), (4, 6))

    class Across(nn.Module):
        def forward(self, x):                       # attention across the samples of the batch
            q = x.transpose(0, 1)                     # (N, B, D)
            return F.scaled_dot_product_attention(q, q, q).transpose(0, 1)

    with pytest.raises(UnsupportedLayerError, match="batch inside the attention"):
        capture(Across(), (3, 4))

    class SoftmaxFolded(nn.Module):
        def forward(self, x):
            return x.reshape(-1, 4).softmax(0)

    with pytest.raises(UnsupportedLayerError, match=r"op 'softmax' .*batch dimension \(dim 0\)"):
        capture(SoftmaxFolded(), (2, 4))

    class ConvFolded(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)

        def forward(self, x):
            return self.conv(x.reshape(-1, 1, 3, 3))     # (2B, 1, 3, 3): channels folded into the batch

    with pytest.raises(UnsupportedLayerError, match=r"Conv2d in module 'conv' needs the batch as the first "
                                                    r"dimension of its input, on its own \(here it is folded into"):
        capture(ConvFolded(), (2, 3, 3))


def test_sdpa_with_dropout_is_refused():
    class Drop(nn.Module):
        def forward(self, x):
            return F.scaled_dot_product_attention(x, x, x, dropout_p=0.1)

    with pytest.raises(UnsupportedLayerError, match=r"scaled_dot_product_attention.*dropout_p=0.1"):
        capture(Drop(), (3, 4))


def _timm():
    from realmodels import torchvision_models
    torchvision_models()   # the stub timm's torchvision import needs
    import timm
    return timm


def _no_dropout(model):
    for m in model.modules():
        if isinstance(m, nn.Dropout) or type(m).__name__ in ("DropPath", "StochasticDepth"):
            m.p = 0.0
    return model


def test_timm_mobilevit_xxs_matches_autograd():
    model = _no_dropout(_timm().create_model("mobilevit_xxs", num_classes=10))
    net = check_two_batches(model, (3, 64, 64), batches=(2, 3))
    assert any(n.op == "sdpa" for n in net.graph.nodes)


def test_timm_vit_with_class_token_matches_autograd():
    model = _no_dropout(_timm().create_model("vit_tiny_patch16_224", num_classes=10, img_size=32, depth=2))
    net = check_two_batches(model, (3, 32, 32))
    assert any(n.op == "expand" for n in net.graph.nodes)


def test_attention_macs_by_hand_and_in_the_layers_table():
    from tinycl.graph.counts import node_counts, total_macs
    from tinycl.graph.table import layer_rows

    class Att(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x):                        # x: (B, N=5, C=8), 2 heads of E=4
            B, N, C = x.shape
            q = self.fc(x).reshape(B, N, 2, C // 2).transpose(1, 2)
            a = q @ q.transpose(-2, -1)              # (B, 2, 5, 5), K = 4
            y = F.scaled_dot_product_attention(q, q, q)
            return a.sum(-1, keepdim=True) * y

    g = capture(Att(), (5, 8))
    mm = next(n for n in g.nodes if n.op == "matmul")
    att = next(n for n in g.nodes if n.op == "sdpa")
    assert node_counts(mm, g, 3) == {"forward": 3 * 2 * 5 * 5 * 4, "backward_input": 2 * 3 * 200,
                                      "backward_weight": 0, "update": 0}
    # q k^T and p v: 2 heads x 5 queries x 5 keys x (4 + 4), per sample; backward twice that
    assert node_counts(att, g, 1) == {"forward": 400, "backward_input": 800, "backward_weight": 0, "update": 0}
    fc = 5 * 8 * 8
    assert total_macs(g)["forward"] == fc + 200 + 400
    rows = {r["name"]: r for r in layer_rows(g)}
    assert rows[mm.name]["forward_macs"] == 200 and rows[att.name]["forward_macs"] == 400
    from tinycl.graph.table import format_layers

    class Rows(nn.Module):
        def forward(self, x):
            return (x.reshape(-1, 8) * 2.0).reshape(-1, 5, 8)   # (B * 5, 8) inside: the table shows B*5x8

    assert "B*5x8" in format_layers(layer_rows(capture(Rows(), (5, 8))))

    class Out(nn.Module):
        def forward(self, x):
            return x.transpose(0, 1) * 2.0

    with pytest.raises(UnsupportedLayerError, match="output holds the batch in dimension 1"):
        capture(Out(), (5, 8))


class TorchMHA(nn.Module):
    """``nn.MultiheadAttention`` (traced through: its (N * B, E) rows alternate the samples) and a
    whole ``nn.TransformerEncoderLayer``, sequence-first and batch-first."""

    def __init__(self, batch_first):
        super().__init__()
        self.batch_first = batch_first
        self.att = nn.MultiheadAttention(8, 2, batch_first=batch_first)
        self.enc = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)

    def forward(self, x):
        s = x if self.batch_first else x.transpose(0, 1)
        y = self.att(s, s, s, need_weights=False)[0]
        y = y if self.batch_first else y.transpose(0, 1)
        return self.enc(x + y)


@pytest.mark.parametrize("batch_first", [True, False])
def test_torch_multihead_attention_and_encoder_layer(batch_first):
    net = check_two_batches(TorchMHA(batch_first), (5, 8), tol=1e-9)
    assert any(n.batch is not None and n.batch[2] == 1 for n in net.graph.nodes)   # samples alternate


class BatchFirstAttention(nn.Module):
    """Attention that keeps the batch first throughout (what the ONNX import reads): heads by
    reshape / transpose, ``q @ k^T``, softmax, ``@ v``, a log-softmax head."""

    def __init__(self, d=8, h=2):
        super().__init__()
        self.h, self.qkv, self.out = h, nn.Linear(d, 3 * d), nn.Linear(d, 4)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3 * self.h, c // self.h).transpose(1, 2).chunk(3, dim=1)
        a = torch.softmax((q @ k.transpose(-2, -1)) * 0.5, dim=-1)
        y = (a @ v).transpose(1, 2).reshape(b, n, c)
        return torch.log_softmax(self.out(y + x), dim=-1)


def test_onnx_matmul_of_two_tensors_and_softmax_match_onnxruntime():
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from test_graph_onnx import _net, _ort, _rel, export
    from tinycl.graph.onnx import graph_from_onnx
    torch.manual_seed(0)
    model = BatchFirstAttention()
    blob = export(model, (5, 8))
    graph, _ = graph_from_onnx(onnx.load_from_string(blob))
    assert {"matmul", "softmax"} <= {n.op for n in graph.nodes}
    x = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(2))
    assert _rel(_net(graph).predict(x), _ort(blob, x)) <= 1e-5
    # gradients: the imported graph (float32 weights, as exported) against autograd on the torch model
    net = _net(graph)
    net.train()
    assert worst_error(net, model.train(), x) <= 1e-5


def test_batch_norm_over_rows_with_the_batch_folded_in():
    class LeVitStyle(nn.Module):                     # LeViT's Linear + BatchNorm1d on (B * N, C) rows
        def __init__(self):
            super().__init__()
            self.fc, self.bn = nn.Linear(6, 6, bias=False), nn.BatchNorm1d(6)

        def forward(self, x):
            y = self.fc(x)
            return self.bn(y.flatten(0, 1)).reshape_as(y)

    net = check_two_batches(LeVitStyle(), (5, 6), tol=1e-9)
    from tinycl.graph.counts import node_counts
    assert node_counts(net.graph["bn"], net.graph)["update"] == 2 * 6


@given(st.lists(st.integers(1, 4), min_size=1, max_size=3), st.lists(st.integers(1, 3), min_size=1, max_size=2),
       st.integers(0, 1000), st.data())
def test_take_with_an_integer_index_matches_autograd(shape, ishape, seed, data):
    dim = data.draw(st.integers(0, len(shape) - 1))
    x = rand(shape, seed)
    index = torch.randint(0, shape[dim], ishape, generator=torch.Generator().manual_seed(seed))   # repeats
    full = (slice(None),) * dim + (index,)
    y_ref, dy, (gx,) = autograd(lambda t: t[full], x, seed=seed + 1)
    close(K.take_forward(x, index, dim), y_ref)
    close(K.take_backward(dy, x.shape, index, dim), gx)


class BiasTable(nn.Module):
    """LeViT / EfficientFormer attention biases: a parameter table indexed by an integer buffer."""

    def __init__(self, n=4, h=2):
        super().__init__()
        self.qk = nn.Linear(6, 2 * 6)
        self.biases = nn.Parameter(torch.randn(h, n))
        self.register_buffer("idx", torch.tensor([[abs(i - j) for j in range(n)] for i in range(n)]))

    def forward(self, x):
        B, N, _ = x.shape
        q, k = self.qk(x).reshape(B, N, 2, 2, 3).permute(2, 0, 3, 1, 4)
        return ((q @ k.transpose(-2, -1)) + self.biases[:, self.idx]).softmax(-1).flatten(1)


def test_attention_bias_table_indexed_by_a_buffer():
    net = check_two_batches(BiasTable(), (4, 6), tol=1e-9)
    assert any(n.op == "take" for n in net.graph.nodes)


def test_int8_front_refuses_a_folded_batch_by_name():
    from tinycl.models.int8_front import quantize_front
    g = capture(Patches(), (4, 6, 4))
    with pytest.raises(UnsupportedLayerError, match=r"INT8 front: op 'reshape' .*folded into dimension 0"):
        quantize_front(g, torch.randn(4, 4, 6, 4))


def test_upsampling_through_the_torch_export_path():
    class Up(nn.Module):                             # a branch on a shape: captured with torch.export
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1)

        def forward(self, x):
            if x.shape[-1] > 2:
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            return F.interpolate(self.conv(x), scale_factor=2, mode="nearest")

    net = check_two_batches(Up(), (2, 3, 3), tol=1e-9)
    assert [n.op for n in net.graph.compute_nodes()] == ["upsample", "conv2d", "upsample"]


def test_attention_weights_output_and_causal_encoder():
    class Weights(nn.Module):                        # need_weights=True (the default): bmm + softmax path
        def __init__(self):
            super().__init__()
            self.att = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            y, w = self.att(x, x, x)
            return y + w.sum(-1, keepdim=True)

    class Causal(nn.Module):                         # pre-norm encoder, additive causal mask buffer
        def __init__(self):
            super().__init__()
            layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, norm_first=True)
            self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(5))

        def forward(self, x):
            return self.enc(x, mask=self.mask, is_causal=True)

    check_two_batches(Weights(), (5, 8), tol=1e-9)
    check_two_batches(Causal(), (5, 8), tol=1e-9)


def test_linear_with_a_computed_bias_and_cross_attention_dims():
    class BeitQkv(nn.Module):                        # timm BEiT: qkv bias = cat(q_bias, k_bias buffer, v_bias)
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(8, 24, bias=False)
            self.q_bias, self.v_bias = nn.Parameter(torch.randn(8)), nn.Parameter(torch.randn(8))
            self.register_buffer("k_bias", torch.zeros(8), persistent=False)

        def forward(self, x):
            bias = torch.cat((self.q_bias, self.k_bias, self.v_bias))
            q, k, v = F.linear(x, self.qkv.weight, bias).reshape(x.shape[0], 5, 3, 8).unbind(2)
            return F.scaled_dot_product_attention(q, k, v)

    class KvDims(nn.Module):                         # nn.MultiheadAttention with kdim / vdim
        def __init__(self):
            super().__init__()
            self.att = nn.MultiheadAttention(8, 2, batch_first=True, kdim=6, vdim=6)

        def forward(self, x):
            return self.att(x, x[..., :6], x[..., 2:])[0]

    net = check_two_batches(BeitQkv(), (5, 8), tol=1e-9)
    from tinycl.graph.counts import node_counts
    lin = next(n for n in net.graph.nodes if n.op == "linear_t")
    assert node_counts(lin, net.graph)["forward"] == 5 * 8 * 24      # 5 rows x 8 in x 24 out, per sample
    check_two_batches(KvDims(), (5, 8), tol=1e-9)
