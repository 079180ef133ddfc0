"""ONNX import: models exported from torch build the same graph as torch capture and run like onnxruntime."""

import functools
import io
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from realmodels import torchvision_models
from tinycl import from_torch
from tinycl.errors import TinyclError, UnsupportedLayerError
from tinycl.graph import capture
from tinycl.graph.counts import total_macs
from tinycl.graph.onnx import graph_from_onnx, module_path
from tinycl.kernels.optim import SGD
from tinycl.models.engine import GraphLayer
from tinycl.models.int8_front import quantize_front
from tinycl.models.network import Network
from tinycl.models.registry import create

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


class UserNet(nn.Module):
    """A residual net as users write it: F.relu, x.mean((2, 3)), torch.cat, an SE multiply, hardswish."""

    def __init__(self, c=8, classes=5):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.a = nn.Conv2d(c, c, 3, padding=1)
        self.b = nn.Conv2d(c, c, 1)
        self.se1 = nn.Conv2d(2 * c, c, 1)
        self.se2 = nn.Conv2d(c, 2 * c, 1)
        self.act = nn.Hardswish()
        self.fc = nn.Linear(2 * c, classes)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = x + F.relu(self.a(x))
        y = torch.cat([x, self.b(x)], 1)
        y = self.act(y * torch.sigmoid(self.se2(F.relu(self.se1(y.mean((2, 3), keepdim=True))))))
        return self.fc(torch.flatten(y.mean((2, 3)), 1))


class OpsNet(nn.Module):
    """The rest of the op table: 1-d convs and pools, layer norm, slices, split, transpose, upsampling,
    scalar and constant-tensor arithmetic, a linear on 3-d input (MatMul + Add), view(x.size(0), -1),
    a channel shuffle with sizes computed from x.size()."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(4, 6, 3, padding=1, groups=2)
        self.bn1 = nn.BatchNorm1d(6)
        self.pool1 = nn.MaxPool1d(2, ceil_mode=True)
        self.ln = nn.LayerNorm(4)
        self.lin = nn.Linear(4, 4)
        self.c2 = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.avg = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        self.register_buffer("scale", torch.linspace(0.5, 1.5, 4).reshape(4, 1, 1))
        self.fc = nn.Linear(4 * 3 * 3 + 4 * 2 * 3, 3)

    def forward(self, x):                                   # x: (N, 4, 10)
        y = self.pool1(F.leaky_relu(self.bn1(self.c1(x)), 0.2))                        # (N, 6, 5)
        y = y[:, 1:5, 1:]                                                               # (N, 4, 4)
        y = torch.tanh(self.lin(self.ln(y.transpose(1, 2))))                            # (N, 4, 4)
        a, b = torch.split(y, [2, 2], dim=1)                                            # (N, 2, 4) each
        z = torch.cat([a.unsqueeze(2), b.unsqueeze(2)], 2).reshape(x.size(0), 2, 2, 4)  # (N, 2, 2, 4)
        z = F.interpolate(z, scale_factor=2, mode="nearest")                            # (N, 2, 4, 8)
        z = self.c2(z)                                                                  # (N, 4, 2, 4)
        n, c, h, w = z.size()                                      # channel shuffle (ShuffleNet)
        z = z.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        lo, hi = z.chunk(2, dim=1)                                 # chunk: slices at Shape(z)[1] // 2
        z = torch.cat([hi, lo], 1)
        z = F.hardsigmoid(z) * self.scale - 0.25
        u = F.interpolate(z, scale_factor=2, mode="bilinear", align_corners=False)      # (N, 4, 4, 8)
        u = self.avg(torch.clamp(u / 2.0, -0.5, 0.5))                                   # (N, 4, 3, 5)
        w = F.gelu(z[:, :, :, 1:]).unsqueeze(1).squeeze(1)                              # (N, 4, 2, 3)
        feats = torch.cat([u[:, :, :, :3].flatten(1), (1.0 - w).view(x.size(0), -1)], 1)
        return self.fc(feats)


def _random_bn(model):
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_(1, 0.2)
            m.bias.data.normal_(0, 0.2)
        if isinstance(m, nn.Dropout):
            m.p = 0.0  # random masks differ between the two engines
    return model


def _mobilenet_v2():
    return torchvision_models().mobilenet_v2(num_classes=10)


MODELS = {
    "resnet8": (lambda: create("resnet8"), (3, 32, 32)),
    "mobilenet-v1": (lambda: create("mobilenet-v1", width=0.25, input_shape=(3, 32, 32)), (3, 32, 32)),
    "user-resnet": (UserNet, (3, 9, 9)),
    "tv-mobilenet_v2": (_mobilenet_v2, (3, 32, 32)),
    "ops": (OpsNet, (4, 10)),
}


def export(model, shape, batch=2, dynamic=True, opset=None) -> bytes:
    """Export with torch's TorchScript exporter; BN and dropout in eval mode (BN kept, not folded)."""
    flags = {m: m.training for m in model.modules()}
    model.train()
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout)):
            m.eval()
    f = io.BytesIO()
    kw = dict(dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}) if dynamic else {}
    if opset:
        kw["opset_version"] = opset
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, torch.randn(batch, *shape), f, dynamo=False,
                              training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
                              input_names=["x"], output_names=["y"], **kw)
    finally:
        for m, t in flags.items():
            m.training = t
    return f.getvalue()


@functools.lru_cache(maxsize=None)
def exported(name):
    make, shape = MODELS[name]
    torch.manual_seed(1)
    model = _random_bn(make())
    return model, shape, export(model, shape)


def _net(graph, channels_last=False) -> Network:
    """The engine around an imported graph, as ``from_torch`` builds it."""
    net = Network(GraphLayer(graph), graph.input_shape, "fp32", "aten", channels_last)
    net.graph = graph
    return net


def _rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-6))


def _ort(blob, x):
    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    return torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_matches_onnxruntime(name):
    _, shape, blob = exported(name)
    graph, inits = graph_from_onnx(onnx.load_from_string(blob))
    assert graph.input_shape == shape and inits
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(2))
    ref = _ort(blob, x)
    assert _rel(_net(graph).predict(x), ref) <= 1e-4
    assert _rel(_net(graph, channels_last=None).predict(x), ref) <= 1e-4   # from_torch's default layout


def _ops(graph):
    return [n.op for n in graph.nodes if n.op not in ("dropout", "detach")]


@pytest.mark.parametrize("name", ["resnet8", "mobilenet-v1", "user-resnet", "tv-mobilenet_v2"])
def test_ops_and_names_match_torch_capture(name):
    model, shape, blob = exported(name)
    graph, _ = graph_from_onnx(onnx.load_from_string(blob))
    ref = capture(model, shape)
    assert _ops(graph) == _ops(ref)
    for a, b in zip([n for n in graph.nodes if n.op != "dropout"], [n for n in ref.nodes if n.op != "dropout"]):
        assert (a.attrs, a.shape) == (b.attrs, b.shape), (a.name, b.name)
    # node names are torch capture's: module paths, and `block.add`-style names for functional ops
    assert [n.name for n in graph.nodes if n.op != "dropout"] == [n.name for n in ref.nodes if n.op != "dropout"]
    assert set(graph.params) == set(ref.params)


@pytest.mark.parametrize("name,cut", [("tv-mobilenet_v2", "features.6"), ("user-resnet", "cat")])
def test_counts_and_int8_front_read_the_imported_graph(name, cut):
    """One graph for every consumer: the same MAC counts, and the same INT8 front bit for bit."""
    model, shape, blob = exported(name)
    graph, _ = graph_from_onnx(onnx.load_from_string(blob))
    ref = capture(model, shape)
    assert total_macs(graph) == total_macs(ref)
    x = torch.randn(8, *shape, generator=torch.Generator().manual_seed(5))
    ours, theirs = (quantize_front(g.split(cut)[0], x).forward_int(x) for g in (graph, ref))
    assert torch.equal(ours[0], theirs[0]) and ours[1:] == theirs[1:]


def test_names_follow_module_paths():
    _, _, blob = exported("resnet8")
    graph, _ = graph_from_onnx(onnx.load_from_string(blob))
    names = [n.name for n in graph.nodes]
    assert names == [n.name for n in capture(create("resnet8"), (3, 32, 32)).nodes]
    assert "block1_1.add" in names and graph.resolve("block2_1") == "block2_1.post"
    front, back = graph.split("block2_1")
    assert front.output == "block2_1.post" and back.nodes[0].shape == graph["block2_1.post"].shape
    assert module_path("/layer1/layer1.0/conv1/Conv", set()) == "layer1.0.conv1"
    assert module_path("/features/features.0/features.0.2/Clip", set()) == "features.0.2"
    assert module_path("/conv2_1/dw/conv2_1/dw.2/Relu", {"conv2_1/dw"}) == "conv2_1/dw.2"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradients_match_torch_capture_and_training_runs(name):
    model, shape, blob = exported(name)
    graph, _ = graph_from_onnx(onnx.load_from_string(blob))
    ours = _net(graph)
    theirs = from_torch(model.train(), shape, channels_last=False)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, *shape, generator=gen)
    for net in (ours, theirs):
        net.train()
        out = net.forward(x)
        net.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(4)), need_input=False)
    g1, g2 = ours.named_grads(), theirs.named_grads()
    assert set(g1) == set(g2)
    floor = 1e-5 * max(float(g.abs().max()) for g in g2.values())
    for k in g2:
        assert (g1[k] - g2[k]).abs().max() <= 1e-4 * max(float(g2[k].abs().max()), floor), k
    ours.zero_grad()
    theirs.zero_grad()
    y = torch.randint(0, out.shape[1], (4,), generator=gen)
    before = {k: v.clone() for k, v in ours.named_parameters().items()}
    losses = [net.train_step(x, y, SGD(lr=0.1)) for net in (ours, theirs)]
    assert np.isfinite(losses[0]) and abs(losses[0] - losses[1]) <= 1e-4 * abs(losses[1])
    after, ref = ours.named_parameters(), theirs.named_parameters()
    assert any(not torch.equal(before[k], after[k]) for k in after)
    for k in ref:
        assert _rel(after[k], ref[k]) <= 1e-4, k


def test_fixed_batch_and_file_path(tmp_path):
    model, shape = UserNet(), (3, 9, 9)
    path = tmp_path / "user.onnx"
    path.write_bytes(export(_random_bn(model), shape, batch=1, dynamic=False))
    graph, _ = graph_from_onnx(str(path))
    x = torch.randn(1, *shape)
    assert _rel(_net(graph).predict(x), _ort(path.read_bytes(), x)) <= 1e-4
    assert _rel(_net(graph).predict(torch.cat([x, x])), torch.cat([_ort(path.read_bytes(), x)] * 2)) <= 1e-4


def test_eval_export_with_folded_batch_norm():
    """torch's default eval export folds BN into the conv weights ('onnx::Conv_12' initializers)."""
    model = _random_bn(create("resnet8")).eval()
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.randn(1, 3, 32, 32), f, dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}})
    graph, _ = graph_from_onnx(onnx.load_from_string(f.getvalue()))
    assert "batchnorm" not in _ops(graph) and "stem.0.weight" in graph.params
    x = torch.randn(2, 3, 32, 32)
    assert _rel(_net(graph).predict(x), model(x).detach()) <= 1e-4


class _Sin(nn.Module):   # an op the ONNX import lacks (Softmax, the example before, is now supported)
    def forward(self, x):
        return torch.sin(x)


def _one_line_error(blob_or_model, *words, cls=UnsupportedLayerError):
    with pytest.raises(cls) as e:
        graph_from_onnx(onnx.load_from_string(blob_or_model) if isinstance(blob_or_model, bytes) else blob_or_model)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    return msg


def test_unsupported_ops_name_the_op_and_node():
    _one_line_error(export(nn.Sequential(nn.Linear(4, 3), _Sin()), (4,)), "'Sin'", "/1/Sin")
    _one_line_error(export(nn.Sequential(nn.Linear(4, 3), nn.GELU()), (4,), opset=17), "'Erf'")
    _one_line_error(export(nn.Sequential(nn.Conv2d(2, 2, 3, dilation=2)), (2, 8, 8)), "'Conv'", "dilation")


def _model(nodes, inputs, outputs, inits=()):
    h = onnx.helper
    g = h.make_graph(nodes, "g", inputs, outputs, list(inits))
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def _vi(name, shape):
    return onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)


def _init(name, shape):
    return onnx.numpy_helper.from_array(np.ones(shape, np.float32), name)


def test_refused_forms_give_one_line():
    h = onnx.helper
    x, y = _vi("x", ["N", 4]), _vi("y", ["N", 3])
    gemm = lambda **kw: _model([h.make_node("Gemm", ["x", "w"], ["y"], name="fc", **kw)], [x], [y],  # noqa: E731
                               [_init("w", (4, 3) if kw.get("transB", 0) == 0 else (3, 4))])
    _one_line_error(gemm(transB=0), "'Gemm'", "'fc'", "transB=1")
    _one_line_error(gemm(transB=1, alpha=2.0), "'Gemm'", "alpha")
    assert graph_from_onnx(gemm(transB=1))[0][graph_from_onnx(gemm(transB=1))[0].output].op == "linear"
    hs = _model([h.make_node("HardSigmoid", ["x"], ["y"], name="hs", alpha=0.2)], [x], [_vi("y", ["N", 4])])
    _one_line_error(hs, "'HardSigmoid'", "alpha=0.2")
    conv = lambda k, **kw: _model([h.make_node("Conv", ["x", "w"], ["y"], name="c", **kw)],  # noqa: E731
                                  [_vi("x", ["N", 1, 4, 4])], [_vi("y", None)], [_init("w", (1, 1, k, k))])
    _one_line_error(conv(2, pads=[0, 0, 1, 1]), "'Conv'", "asymmetric pads")
    _one_line_error(conv(3, auto_pad="SAME_UPPER", strides=[2, 2]), "'Conv'", "SAME_UPPER", "asymmetric")
    same = graph_from_onnx(conv(3, auto_pad="SAME_UPPER"))[0]
    assert same[same.output].attrs["padding"] == (1, 1) and same[same.output].shape == (1, 4, 4)
    two_in = _model([h.make_node("Add", ["x", "z"], ["y"])], [x, _vi("z", ["N", 4])], [_vi("y", ["N", 4])])
    _one_line_error(two_in, "2 inputs", cls=TinyclError)
    two_out = _model([h.make_node("Relu", ["x"], ["y"]), h.make_node("Tanh", ["x"], ["t"])], [x],
                     [_vi("y", ["N", 4]), _vi("t", ["N", 4])])
    _one_line_error(two_out, "2 outputs", cls=TinyclError)
    as_input = _model([h.make_node("Gemm", ["x", "w"], ["y"], transB=1)], [x, _vi("w", [3, 4])], [y],
                      [_init("w", (3, 4))])
    _one_line_error(as_input, "'w' is also a graph input", cls=TinyclError)
    mix = _model([h.make_node("Flatten", ["x"], ["y"], axis=0)], [x], [_vi("y", [1, "M"])])
    _one_line_error(mix, "'Flatten'", "batch")
    _one_line_error("/nonexistent/model.onnx", "not found", cls=TinyclError)
