"""Import a torch ``nn.Module`` into a tinycl :class:`Network` through the captured graph.

``from_torch`` captures the module with :func:`tinycl.graph.capture` (torch.fx), builds one engine
op per node and checks the result against the module itself on a random probe (eval mode), so a
capture that would compute something else is refused instead of trained.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import TinyclError
from ..graph import Graph, capture
from ..graph.modules import register_custom
from .build import CUSTOM_BUILDERS
from .engine import GraphLayer
from .network import Network


def register_converter(module_type: type, fn) -> None:
    """Teach :func:`from_torch` a new torch layer type: ``fn(module, path) -> Layer``."""
    op = f"custom:{module_type.__name__}"
    register_custom(module_type, op)
    CUSTOM_BUILDERS[op] = fn


def _check(module: nn.Module, net: Network) -> None:
    """The network's eval output equals the module's on a seeded random probe."""
    dtype = next((p.dtype for p in module.parameters()), torch.float32)
    probe = torch.randn((2, *net.input_shape), generator=torch.Generator().manual_seed(0), dtype=dtype)
    flags = {m: m.training for m in module.modules()}
    try:
        module.eval()
        with torch.no_grad():
            ref = module(probe)
    finally:
        for m, t in flags.items():
            m.training = t
    out = net.predict(probe)
    if out.shape != ref.shape:
        raise TinyclError(f"imported network gives output shape {tuple(out.shape)}, torch gives {tuple(ref.shape)}")
    tol = 1e-9 if dtype == torch.float64 else 1e-3
    err = float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-6))
    if not err <= tol:
        raise TinyclError(f"the captured network differs from the module (relative error {err:.2e}); "
                          f"please report this model")


def from_torch(module: nn.Module, input_shape, precision="fp32", impl: str = "aten",
               channels_last: bool | None = None) -> Network:
    """A tinycl :class:`Network` with the weights, buffers and structure of ``module``.

    ``input_shape`` is one sample's shape, e.g. ``(3, 32, 32)``. ``channels_last`` (default: on for
    image inputs with ``impl="aten"`` and a conv of >= 16 input channels) keeps activations and conv
    weights in NHWC order, which oneDNN runs faster; values are unchanged.
    Raises :class:`tinycl.errors.UnsupportedLayerError` naming the op, the module path and the
    source line of anything tinycl cannot run.
    """
    if impl not in ("aten", "im2col"):
        raise TinyclError(f"unknown impl {impl!r}; allowed: aten, im2col")
    graph = capture(module, input_shape)
    root = GraphLayer(graph)
    _check(module, Network(root, graph.input_shape, "fp32", impl, False))
    net = Network(root, graph.input_shape, precision, impl, channels_last)
    net.frozen |= set(graph.frozen)
    net.training = module.training
    net.graph = graph
    return net


def from_onnx(path, precision="fp32", impl: str = "aten", channels_last: bool | None = None,
              training: bool = True) -> Network:
    """A :class:`Network` from an ONNX file or ``onnx.ModelProto`` (docs/engine.md, "ONNX"): the same
    graph and ops as :func:`from_torch`; checked against onnxruntime when it is installed."""
    from ..graph.onnx import graph_from_onnx
    graph, _ = graph_from_onnx(path)
    net = from_graph(graph, precision, impl, channels_last, training)
    _check_onnx(path, net)
    return net


def _check_onnx(path, net: Network) -> None:
    """The network's eval output equals onnxruntime's on a seeded random probe (skipped without it)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return
    model = path if isinstance(path, (str, bytes)) else path.SerializeToString()
    try:
        sess = ort.InferenceSession(model if isinstance(model, bytes) else str(model),
                                    providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - onnxruntime cannot run it: nothing to compare against
        return
    probe = torch.randn((2, *net.input_shape), generator=torch.Generator().manual_seed(0))
    try:
        ref = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: probe.numpy()})[0])
    except Exception:  # noqa: BLE001 - e.g. a fixed batch of 1 in the file
        return
    out = net.predict(probe)
    err = float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-6))
    if out.shape != ref.shape or not err <= 1e-3:
        raise TinyclError(f"the imported ONNX network differs from onnxruntime (relative error {err:.2e}); "
                          f"please report this model")


def from_graph(graph: Graph, precision="fp32", impl: str = "aten", channels_last: bool | None = None,
               training: bool = True) -> Network:
    """A :class:`Network` running a captured graph (e.g. the back of ``graph.split(latent_layer)``).

    The network gets its own copies of the graph's parameters and buffers.
    """
    if impl not in ("aten", "im2col"):
        raise TinyclError(f"unknown impl {impl!r}; allowed: aten, im2col")
    net = Network(GraphLayer(graph), graph.input_shape, precision, impl, channels_last)
    net.frozen |= set(graph.frozen)
    net.training = training
    net.graph = graph
    return net


class FloatFront(nn.Module):
    """A frozen float front (``front_int8: false``): the front graph run in eval mode."""

    def __init__(self, graph: Graph):
        super().__init__()
        self.net = from_graph(graph, training=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.predict(x)

    def nbytes(self) -> int:
        """FP32 weights of the front (bytes)."""
        return 4 * sum(p.numel() for p in self.net.named_parameters().values())
