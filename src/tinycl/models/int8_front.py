"""Post-training INT8 quantization of a frozen front, read from its captured graph.

``quantize_front(front, calib)`` takes an ``nn.Module`` (captured with :func:`tinycl.graph.capture`)
or a front :class:`~tinycl.graph.Graph` (``graph.split(latent_layer)[0]``) and returns a
:class:`QuantizedFront` that runs with integer semantics only (:mod:`tinycl.kernels.int8`,
:mod:`tinycl.kernels.int8_elementwise`, :mod:`tinycl.numerics.quant`):

- Eval semantics: nothing is modified; a batch norm right after a conv (its only reader) is folded
  from its *running* statistics into the conv; a standalone batch norm becomes a depthwise 1x1 conv.
  Dropout, stochastic depth and detach are identities.
- A ReLU / ReLU6 that is the only reader of a conv, linear or add becomes its requantization
  clamp; other ReLUs are clamps on codes.
- Weights INT8 symmetric per output channel, biases INT32, activations INT8 per tensor (zero point)
  with ranges = min/max over the calibration batch of the float (folded) network. Requantization
  uses integer (multiplier, shift). ``add``: TFLite's fixed-point ADD; ``mul`` of two tensors: one
  multiplier; ``cat``: inputs rescaled to the output quantization; other elementwise functions
  (hardswish, sigmoid, SiLU, scalar add / mul...) as 256-entry tables of codes.
"""

from __future__ import annotations

import torch
from torch import nn

from tinycl.errors import TinyclError, UnsupportedLayerError
from tinycl.graph import Graph, capture
from tinycl.graph.ir import Node
from tinycl.numerics import quant as Q

from .int8_ops import Add, Cat, Keep, Lut, Mul, QOp, Track, Weighted, lut_function

_IDENTITY = ("dropout", "stochastic_depth", "detach")


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Folded (weight, bias) in float64 of ``bn(conv(x))`` with BN's running statistics."""
    stats = {"running_mean": bn.running_mean, "running_var": bn.running_var, "weight": bn.weight, "bias": bn.bias}
    return _fold(conv.weight, conv.bias, stats, bn.eps)


def _fold(conv_w: torch.Tensor, conv_b: torch.Tensor | None, bn: dict, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Folded float64 (weight, bias); ``bn`` holds ``running_mean``, ``running_var``, ``weight``, ``bias``."""
    w = conv_w.detach().to(torch.float64)
    b = conv_b.detach().to(torch.float64) if conv_b is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    inv = 1.0 / torch.sqrt(bn["running_var"].detach().to(torch.float64) + eps)
    gamma = bn["weight"].detach().to(torch.float64) if bn.get("weight") is not None else torch.ones_like(inv)
    beta = bn["bias"].detach().to(torch.float64) if bn.get("bias") is not None else torch.zeros_like(inv)
    k = gamma * inv
    return w * k.reshape(-1, *(1,) * (w.dim() - 1)), (b - bn["running_mean"].detach().to(torch.float64)) * k + beta


def _unsupported(node: Node, why: str = "") -> UnsupportedLayerError:
    extra = f" ({why})" if why else ""
    typ = f", {node.module_type}" if node.module_type else ""
    return UnsupportedLayerError(f"INT8 front: op '{node.op}' of node '{node.name}' (module "
                                 f"'{node.module or '<root>'}'{typ}) is not supported{extra}")


class _Planner:
    """Turns the front graph into quantized ops, folding batch norms and fusing activations."""

    def __init__(self, g: Graph):
        self.g, self.cons = g, g.consumers()
        self.alias: dict[str, str] = {}
        self.ops: dict[str, QOp] = {}

    def src(self, name: str) -> str:
        return self.alias.get(name, name)

    def run(self) -> list[QOp]:
        for node in self.g.compute_nodes():
            if node.batch is not None:
                raise _unsupported(node, f"the batch is folded into dimension {node.batch[0]} (attention heads, "
                                         f"patches); choose a latent layer before it")
            ins = [self.src(i) for i in node.inputs]
            op = self._op(node, ins)
            if isinstance(op, str):
                self.alias[node.name] = op
            else:
                self.ops[node.name] = op
        return list(self.ops.values())

    def _sole_reader(self, node: Node) -> bool:
        return self.cons[node.inputs[0]] == [node.name]

    def _p(self, node: Node, role: str):
        name = node.params.get(role)
        return None if name is None else self.g.params[name]

    def _op(self, node: Node, ins: list[str]):
        op, a = node.op, node.attrs
        prev = self.ops.get(ins[0]) if ins else None
        if op in _IDENTITY:
            return ins[0]
        if op == "conv2d":
            return Weighted(node.name, ins, "conv", self._p(node, "weight").detach().to(torch.float64),
                            self._bias(node), stride=a["stride"], padding=a["padding"], groups=a["groups"])
        if op == "linear":
            return Weighted(node.name, ins, "linear", self._p(node, "weight").detach().to(torch.float64),
                            self._bias(node))
        if op == "batchnorm":
            return self._batchnorm(node, ins, prev)
        if op in ("relu", "relu6"):
            if prev is not None and prev.fusable and prev.act is None and self._sole_reader(node):
                prev.act = op
                return ins[0]
            return Keep(node.name, ins, op)
        if op == "add" and len(ins) == 2:
            return Add(node.name, ins)
        if op == "mul" and len(ins) == 2:
            return Mul(node.name, ins)
        if op == "cat":
            return Cat(node.name, ins, a["dim"])
        return self._other(node, ins)

    def _bias(self, node: Node) -> torch.Tensor:
        b = self._p(node, "bias")
        w = self._p(node, "weight")
        return b.detach().to(torch.float64) if b is not None else torch.zeros(w.shape[0], dtype=torch.float64)

    def _batchnorm(self, node: Node, ins: list[str], prev):
        bn = {k: self.g.buffers[v] for k, v in node.buffers.items()}
        bn.update({k: self._p(node, k) for k in ("weight", "bias")})
        eps = node.attrs["eps"]
        if isinstance(prev, Weighted) and prev.kind == "conv" and not prev.folded and prev.act is None \
                and ins[0] == node.inputs[0] and self._sole_reader(node):
            prev.w, prev.b = _fold(prev.w, prev.b, bn, eps)
            prev.folded = True
            return ins[0]
        if len(node.shape) != 3:
            raise _unsupported(node, "a batch norm on non-image tensors must follow a conv")
        c = node.shape[0]
        w, b = _fold(torch.ones(c, 1, 1, 1, dtype=torch.float64), None, bn, eps)
        return Weighted(node.name, ins, "conv", w, b, stride=(1, 1), padding=(0, 0), groups=c)

    def _other(self, node: Node, ins: list[str]):
        op, a = node.op, node.attrs
        if op in ("maxpool", "avgpool"):
            if a["dims"] != 2 or a["ceil_mode"]:
                raise _unsupported(node, "1-d pools and ceil_mode")
            return Keep(node.name, ins, op, kernel=a["kernel"], stride=a["stride"], padding=a["padding"],
                        count_include_pad=a.get("count_include_pad", True))
        if op == "adaptive_avgpool" and a["dims"] == 2 and all(o == 1 for o in a["output_size"]):
            return Keep(node.name, ins, "gap")
        if op == "mean" and sorted(a["dims"]) == [2, 3] and len(self.g[node.inputs[0]].shape) == 3:
            gap = Keep(node.name + "#gap", ins, "gap")
            self.ops[gap.name] = gap
            return gap.name if a["keepdim"] else Keep(node.name, [gap.name], "view", shape=node.shape)
        if op == "reshape":
            return Keep(node.name, ins, "view", shape=node.shape)
        if op in ("permute", "slice", "split", "getitem"):
            key = {"permute": "dims", "slice": "index", "getitem": "index"}.get(op)
            kw = {key: a[key]} if key else dict(sizes=a["sizes"], dim=a["dim"], squeeze=a["squeeze"])
            return Keep(node.name, ins, op, **kw)
        fn = lut_function(op, a) if len(ins) == 1 else None
        if fn is None:
            raise _unsupported(node)
        return Lut(node.name, ins, fn)


class QuantizedFront(nn.Module):
    """INT8 frozen front; no trainable parameters. Build it with :func:`quantize_front`."""

    def __init__(self, ops: list[QOp], in_qp: tuple[float, int], out_qp: tuple[float, int], output: str,
                 input_name: str = "input"):
        super().__init__()
        self.input_name = input_name
        self.ops, self.in_scale, self.in_zp = ops, in_qp[0], in_qp[1]
        self.out_scale, self.out_zp = out_qp
        self.output = output
        self.last_use = {}
        for i, op in enumerate(ops):
            for k in op.inputs:
                self.last_use[k] = i

    @torch.no_grad()
    def forward_int(self, x: torch.Tensor) -> tuple[torch.Tensor, float, int]:
        """Float NCHW input -> (int8 latent codes, scale, zero_point); real = scale * (q - zp)."""
        return _run(self.ops, "ifwd", Q.quantize(x, self.in_scale, self.in_zp), self.input_name, self.output,
                    self.last_use), \
            self.out_scale, self.out_zp

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float NCHW input -> dequantized float32 latent."""
        q, s, zp = self.forward_int(x)
        return Q.dequantize(q, s, zp)

    def nbytes(self) -> int:
        """Bytes of the deployed front: int8 weights, int32 biases, per-channel int32 multipliers and
        int8 shifts, int8 zero points, add / mul / cat parameters, tables, plus the input quantizer
        (float32 scale + int8 zero point). Activations not included."""
        return sum(op.nbytes() for op in self.ops) + 4 + 1


def _run(ops: list[QOp], step: str, x, inp: str, output: str, last_use: dict):
    vals = {inp: x}
    for i, op in enumerate(ops):
        vals[op.name] = getattr(op, step)([vals[k] for k in op.inputs])
        for k in op.inputs:
            if last_use.get(k) == i and k != output:
                del vals[k]
    return vals[output]


def _build(ops: list[QOp], inp: str, in_qp) -> dict:
    qps = {inp: in_qp}
    for op in ops:
        qps[op.name] = op.build([qps[k] for k in op.inputs])
    return qps


@torch.no_grad()
def quantize_front(front: nn.Module | Graph, calib: torch.Tensor, batch_size: int = 256) -> QuantizedFront:
    """Post-training INT8 quantization of ``front`` calibrated on ``calib`` (float, batch first).

    Activation ranges are the min/max over ``calib`` of the folded float network (eval semantics,
    whatever ``front.training`` is). Raises :class:`tinycl.errors.UnsupportedLayerError` naming the
    first node it cannot quantize.
    """
    if calib.numel() == 0:
        raise TinyclError("INT8 front: empty calibration batch")
    graph = front if isinstance(front, Graph) else capture(front, tuple(calib.shape[1:]))
    planner = _Planner(graph)
    ops = planner.run()
    output = planner.src(graph.output)
    if not ops or output == graph.input:
        raise UnsupportedLayerError("INT8 front: the front has no layers to quantize")
    last_use = {k: i for i, op in enumerate(ops) for k in op.inputs}
    in_track = Track()
    for chunk in torch.split(calib.to(torch.float32), batch_size):
        in_track.see(chunk)
        _run(ops, "ffwd", chunk, graph.input, output, last_use)
    in_qp = in_track.qparams()
    qps = _build(ops, graph.input, in_qp)
    return QuantizedFront(ops, in_qp, qps[output], output, graph.input)


@torch.no_grad()
def float_front_eval(front: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Reference: ``front`` run in eval mode; the caller's train/eval mode is restored after."""
    was = front.training
    front.eval()
    try:
        return front(x)
    finally:
        front.train(was)
