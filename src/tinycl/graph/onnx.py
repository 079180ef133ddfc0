"""Import an ONNX model as a :class:`~tinycl.graph.ir.Graph`: the same nodes that torch capture makes.

``graph_from_onnx(path_or_model)`` loads the model with the ``onnx`` package, folds every node whose
inputs are all constants, runs ONNX shape inference at two batch sizes and folds the shape arithmetic
that does not depend on the batch (:mod:`tinycl.graph.onnx_shapes`), then lowers each remaining node
to one tinycl primitive (:mod:`tinycl.graph.onnx_ops`). Nodes that only compute shapes from the batch
size (``Shape -> Gather -> Concat`` feeding a ``Reshape``) are dropped: the reshape reads its
per-sample output shape from shape inference.

The model must have one input (batch first; the batch dimension symbolic or fixed) and one output.
Weights used by Conv / Gemm / MatMul / BatchNormalization / LayerNormalization become graph
parameters named after their initializers (torch's exporter keeps ``layer1.0.conv1.weight``); node
names are the module paths rebuilt from the ONNX node names (``/layer1/layer1.0/conv1/Conv`` ->
``layer1.0.conv1``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ..errors import TinyclError, UnsupportedLayerError
from .ir import Graph, Node
from .onnx_shapes import NO_FOLD, fold_shapes, infer_shapes, pin_reshapes, shape_slice

_READABLE = re.compile(r"^[A-Za-z_][\w./-]*$")


def graph_from_onnx(model) -> tuple[Graph, dict[str, torch.Tensor]]:
    """(graph, initializers as torch tensors keyed by their ONNX names) of an ONNX file or ModelProto."""
    proto = _load(model)
    imp = Importer(proto)
    return imp.run(), {k: torch.from_numpy(np.array(v)) for k, v in imp.inits.items()}


def _load(model):
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx is a dev dependency
        raise TinyclError("reading ONNX models needs the 'onnx' package (pip install onnx)") from None
    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.is_file():
        raise TinyclError(f"ONNX model {str(path)!r} not found")
    try:
        return onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - a damaged or non-ONNX file
        raise TinyclError(f"cannot read ONNX model {str(path)!r}: {str(e).splitlines()[0] if str(e) else e}") from None


def module_path(node_name: str, known: set[str]) -> str:
    """The module path behind a torch-exported node name (``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0.conv1``).

    torch's exporter writes each scope level as the module's qualified name from its last
    non-numeric part (``layer1.0``, ``conv1``). ``known`` holds module paths seen in initializer
    names, which resolves module names that themselves contain ``/``.
    """
    segs = [s for s in node_name.split("/") if s][:-1]
    path: list[str] = []
    while segs:
        best = None
        for j in range(len(segs), 0, -1):
            full = _child(path, "/".join(segs[:j]))
            if full is None:
                continue
            if ".".join(full) in known:
                best = (j, full)
                break
            if best is None and (j == 1 or len(segs[j - 1].split(".")) > 1):
                best = (j, full)
        j, path = best if best else (1, path + [segs[0]])
        segs = segs[j:]
    return ".".join(path)


def _child(path: list[str], unq: str) -> list[str] | None:
    """Parent atoms + one level written as its unqualified name; None where they do not fit."""
    atoms = unq.split(".")
    if len(atoms) == 1:
        return path + atoms
    head = atoms[:-1]
    if len(head) <= len(path) and path[len(path) - len(head):] == head:
        return path + atoms[-1:]
    return None


class Importer:
    """Walks the ONNX graph once, producing the tinycl graph."""

    def __init__(self, proto):
        from onnx import numpy_helper
        self.proto = proto
        g = proto.graph
        self.inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        self._check_io(g)
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)
        self.consts: dict[str, np.ndarray] = dict(self.inits)
        self.folded: set[str] = set()   # first outputs of nodes folded to constants
        model = self._prefold()
        self.dims = infer_shapes(model)
        for _ in range(len(proto.graph.node)):   # fold shape math, pin reshapes, infer again
            if not (fold_shapes(self, model) | pin_reshapes(self, model)):
                break
            self.dims = infer_shapes(model)
        inp = g.input[0]
        self.input_name = inp.name
        d = self.dims.get(inp.name)
        if not d or len(d) < 2 or not all(isinstance(x, int) and x > 0 for x in d[1:]):
            raise TinyclError(f"ONNX input '{inp.name}' has shape {d}; tinycl needs (batch, ...) with every "
                              f"per-sample dimension fixed")
        self.batch = d[0]
        self.data: set[str] = {inp.name}
        self.name_of: dict[str, str] = {inp.name: "input"}
        self.nodes: list[Node] = [Node("input", "input", [], shape=tuple(d[1:]))]
        self.params: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] = {}
        self.param_of_init: dict[tuple, str] = {}
        self.taken: set[str] = {"input"}
        self.skip: set[str] = set()   # first outputs of nodes fused into an earlier one
        self.consumers: dict[str, list] = {}   # value -> the nodes reading it (None: the graph output)
        for n in g.node:
            for x in n.input:
                self.consumers.setdefault(x, []).append(n)
        for o in g.output:
            self.consumers.setdefault(o.name, []).append(None)
        self.module_outputs: dict[str, str] = {}
        self._scopes(g)

    def _scopes(self, g) -> None:
        """Module paths named by initializers, and how many nodes each exported scope holds."""
        self.known = {k.rsplit(".", 1)[0] for k in self.inits if _READABLE.match(k) and "." in k}
        self.known |= {p for k in list(self.known) for p in _prefixes(k)}
        self.scope_count: dict[str, int] = {}
        for n in g.node:
            if n.op_type != "Constant":
                scope = n.name.rsplit("/", 1)[0]
                self.scope_count[scope] = self.scope_count.get(scope, 0) + 1
        self.parents = {s.rsplit("/", i)[0] for s in self.scope_count for i in range(1, s.count("/") + 1)}

    @staticmethod
    def _check_io(g) -> None:
        both = [i.name for i in g.input if i.name in {x.name for x in g.initializer}]
        if both:
            raise TinyclError(f"ONNX initializer '{both[0]}' is also a graph input (it could be fed at run time); "
                              f"re-export with keep_initializers_as_inputs=False")
        if len(g.input) != 1:
            raise TinyclError(f"the ONNX model has {len(g.input)} inputs ({', '.join(i.name for i in g.input)}); "
                              f"tinycl needs exactly one")
        if len(g.output) != 1:
            raise TinyclError(f"the ONNX model has {len(g.output)} outputs ({', '.join(o.name for o in g.output)}); "
                              f"tinycl needs exactly one")

    # -- values -----------------------------------------------------------------------------
    def is_data(self, name: str) -> bool:
        return name in self.data

    def const(self, name: str, node, role: str) -> np.ndarray | None:
        """The constant value of input ``name`` ('' -> None); refuses a computed value."""
        if not name:
            return None
        if name not in self.consts:
            raise self.error(node, f"needs a constant {role} (got a computed one)")
        return self.consts[name]

    def full_dims(self, name: str, node) -> list:
        d = self.dims.get(name)
        if d is None or any(not isinstance(x, int) for x in d[1:]):
            raise self.error(node, f"has output '{name}' of unknown shape {d} after ONNX shape inference")
        return d

    def sample_shape(self, name: str, node) -> tuple:
        """One sample's shape of data value ``name`` (its first dim must be the batch)."""
        d = self.full_dims(name, node)
        if not d or d[0] != self.batch:
            raise self.error(node, f"does not keep the batch as the first dimension of '{name}' (shape {d})")
        return tuple(d[1:])

    def rank(self, name: str, node) -> int:
        return len(self.full_dims(name, node))

    def error(self, node, why: str) -> UnsupportedLayerError:
        return UnsupportedLayerError(f"ONNX op '{node.op_type}' (node '{node.name or node.output[0]}') {why}")

    # -- parameters ---------------------------------------------------------------------------
    def param(self, init: str, role: str, base: str, node, transpose: bool = False, buffer: bool = False) -> str:
        """The graph parameter (or buffer) behind initializer ``init``; tied uses share one."""
        key = (init, transpose, buffer)
        if key in self.param_of_init:
            return self.param_of_init[key]
        v = self.const(init, node, role)
        t = torch.from_numpy(np.array(v, dtype=np.float32 if v.dtype == np.float64 else v.dtype).copy())
        if not t.is_floating_point():
            raise self.error(node, f"has a {role} of dtype {v.dtype}; tinycl needs float")
        t = t.t().contiguous() if transpose else t
        name = init if _READABLE.match(init) and not init.startswith("onnx::") and not transpose \
            else f"{base}.{role}"
        store = self.buffers if buffer else self.params
        while name in self.params or name in self.buffers:
            name = name + "_"
        store[name] = t
        self.param_of_init[key] = name
        return name

    # -- naming -------------------------------------------------------------------------------
    def base_name(self, node, weight: str = "") -> tuple[str, bool]:
        """(name stem, whether it names a whole module) for ``node``."""
        if weight and _READABLE.match(weight) and not weight.startswith("onnx::") and "." in weight:
            return weight.rsplit(".", 1)[0], True
        path = module_path(node.name, self.known) if node.name.startswith("/") else ""
        scope = node.name.rsplit("/", 1)[0]
        if path and self.scope_count.get(scope, 0) == 1 and scope not in self.parents:
            return path, True
        op = _SHORT.get(node.op_type, node.op_type.lower())
        if node.name and not node.name.startswith("/"):
            return re.sub(r"[^\w./-]", "_", node.name), False
        return (f"{path}.{op}" if path else op), False

    def unique(self, base: str, module: bool) -> str:
        name, i = base, 1
        while name in self.taken:
            name, i = (f"{base}@{i}" if module else f"{base}_{i}"), i + 1
        self.taken.add(name)
        return name

    # -- the walk -----------------------------------------------------------------------------
    def run(self) -> Graph:
        from .onnx_ops import ALIAS, lower
        for node in self.proto.graph.node:
            if node.output[0] in self.skip or node.output[0] in self.folded:
                continue
            if self._fold(node):
                continue
            if not any(self.is_data(x) for x in node.input if x):
                continue  # shape arithmetic on the batch size: read by Reshape through shape inference
            if node.op_type in ("Shape", "Size"):
                continue
            out = lower(self, node)
            if out is ALIAS:
                self.name_of[node.output[0]] = self.name_of[node.input[0]]
                self.data.add(node.output[0])
        return self._finish()

    def add(self, node, op: str, inputs: list[str], attrs: dict, params=None, buffers=None,
            shape=None, weight: str = "", base: str | None = None) -> str:
        """Append a tinycl node for ONNX ``node`` reading ONNX values ``inputs``; returns its name."""
        for x in inputs:
            if x not in self.name_of:
                raise self.error(node, f"reads '{x}', which tinycl did not import")
        stem, module = (base, True) if base else self.base_name(node, weight)
        name = self.unique(stem, module)
        out = node.output[0]
        shape = self.sample_shape(out, node) if shape is None else shape
        path = module_path(node.name, self.known) if node.name.startswith("/") else ""
        self.nodes.append(Node(name, op, [self.name_of[x] for x in inputs], attrs, params or {}, buffers or {},
                               shape, path, node.op_type))
        self.name_of[out] = name
        self.data.add(out)
        for p in [path, *_prefixes(path)] if path else []:
            self.module_outputs[p] = name
        return name

    def const_node(self, node, init: str) -> str:
        """A batch-less constant tensor operand (``x * scale``) as a ``const`` node."""
        key = f"const:{init}"
        if key in self.name_of:
            return key
        v = self.consts[init]
        stem = re.sub(r"[^\w./-]", "_", init) if not init.startswith("onnx::") else f"{self.base_name(node)[0]}.const"
        bname = self.param(init, "const", stem, node, buffer=True)
        name = self.unique(stem if _READABLE.match(stem) else "const", False)
        self.nodes.append(Node(name, "const", [], {"no_batch": True}, {}, {"value": bname}, tuple(v.shape)))
        self.name_of[key] = name
        return key

    def _prefold(self):
        """Fold every constant-only node, so that shape inference sees constant slice bounds, axes..."""
        import onnx
        from onnx import numpy_helper
        g = self.proto.graph
        for node in g.node:
            if node.op_type not in NO_FOLD and self._fold(node):
                self.folded.add(node.output[0])
        rest = [n for n in g.node if n.output[0] not in self.folded]
        used = {x for n in rest for x in n.input} | {o.name for o in g.output}
        inits = list(g.initializer) + [numpy_helper.from_array(v, k) for k, v in self.consts.items()
                                       if k in used and k not in self.inits]
        graph = onnx.helper.make_graph(rest, g.name, g.input, g.output, inits, value_info=g.value_info)
        model = onnx.helper.make_model(graph, opset_imports=self.proto.opset_import, ir_version=self.proto.ir_version)
        return model

    def evaluate(self, node, feeds: dict) -> list:
        from onnx.reference import ReferenceEvaluator
        try:
            return ReferenceEvaluator(node, opsets={"": self.opset}).run(None, feeds)
        except Exception as e:  # noqa: BLE001 - an op the reference evaluator cannot fold
            raise self.error(node, f"on constants could not be folded: {str(e).splitlines()[0] if str(e) else e}") \
                from None

    def _fold(self, node) -> bool:
        """Evaluate a node whose inputs are all constants (Constant, Identity of a weight, shape math)."""
        if node.op_type == "Shape" and node.input[0] in self.dims:
            d = self.dims[node.input[0]]
            if d and all(isinstance(x, int) for x in d):
                self.consts[node.output[0]] = shape_slice(np.array(d, dtype=np.int64), node)
                return True
            return False
        if node.op_type in NO_FOLD or any(x and x not in self.consts for x in node.input):
            return False
        outs = self.evaluate(node, {x: self.consts[x] for x in node.input if x})
        for name, v in zip(node.output, outs):
            if name:
                self.consts[name] = np.asarray(v)
        return True

    def _finish(self) -> Graph:
        out = self.proto.graph.output[0].name
        if out not in self.name_of or out not in self.data:
            raise TinyclError(f"the ONNX output '{out}' does not depend on the input")
        last = self.name_of[out]
        live = {last}
        for nd in reversed(self.nodes):
            if nd.name in live:
                live.update(nd.inputs)
        nodes = [nd for nd in self.nodes if nd.name in live]
        used_p = {p for nd in nodes for p in nd.params.values()}
        used_b = {b for nd in nodes for b in nd.buffers.values()}
        names = {nd.name for nd in nodes}
        mods = {m: n for m, n in self.module_outputs.items() if n in names and n != "input"}
        return Graph(nodes, "input", last, self.nodes[0].shape,
                     {k: v for k, v in self.params.items() if k in used_p},
                     {k: v for k, v in self.buffers.items() if k in used_b}, set(), mods, set())


def _prefixes(path: str) -> list[str]:
    parts = path.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


_SHORT = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Concat": "cat", "ReduceMean": "mean",
          "ReduceSum": "sum", "Relu": "relu", "Sigmoid": "sigmoid", "Flatten": "flatten", "Reshape": "reshape",
          "Transpose": "permute", "Slice": "getitem", "Split": "split", "Clip": "clamp", "HardSwish": "hardswish",
          "GlobalAveragePool": "adaptive_avg_pool2d", "Squeeze": "squeeze", "Unsqueeze": "unsqueeze",
          "Resize": "interpolate", "Tanh": "tanh", "HardSigmoid": "hardsigmoid", "LeakyRelu": "leaky_relu"}
