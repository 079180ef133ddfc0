"""Lower a traced fx graph to tinycl primitives: one table for modules, one for functions and methods.

Every tensor-valued fx node becomes one :class:`~tinycl.graph.ir.Node`; non-tensor values (sizes,
shape arithmetic) are folded into constants using two probe runs at different batch sizes, and a
value that depends on the batch is only allowed where the op's per-sample result does not (reshape).
"""

from __future__ import annotations

import operator
import re

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedLayerError
from . import layout as L
from .ir import Graph, Node
from .modules import is_leaf, module_attrs  # noqa: F401  (is_leaf re-exported for capture)

_ALIAS = "alias"  # a call that returns its input unchanged (contiguous, clone, Identity)

# function or method name -> op kind (the op's own attrs are read by _fn_attrs)
_ELEMENTWISE = {"add": "add", "iadd": "add", "add_": "add", "sub": "sub", "isub": "sub", "sub_": "sub",
                "rsub": "rsub", "mul": "mul", "imul": "mul", "mul_": "mul", "truediv": "div", "div": "div",
                "itruediv": "div", "div_": "div", "neg": "neg"}
_ACTIVATIONS = {"relu": "relu", "relu_": "relu", "relu6": "relu6", "leaky_relu": "leaky_relu",
                "hardswish": "hardswish", "hardsigmoid": "hardsigmoid", "sigmoid": "sigmoid", "sigmoid_": "sigmoid",
                "silu": "silu", "tanh": "tanh", "gelu": "gelu", "hardtanh": "hardtanh", "clamp": "clamp",
                "clamp_": "clamp", "clip": "clamp"}
_SHAPE = {"view": "reshape", "reshape": "reshape", "flatten": "reshape", "unflatten": "reshape",
          "squeeze": "reshape", "unsqueeze": "reshape", "view_as": "reshape", "reshape_as": "reshape",
          "contiguous": _ALIAS, "clone": _ALIAS, "permute": "permute", "transpose": "permute", "t": "permute",
          "cat": "cat", "concat": "cat", "concatenate": "cat", "split": "split", "chunk": "split",
          "unbind": "split", "tensor_split": "split", "mean": "mean", "sum": "sum", "detach": "detach",
          "dropout": "dropout", "stochastic_depth": "stochastic_depth", "adaptive_avg_pool2d": "adaptive_avgpool",
          "adaptive_avg_pool1d": "adaptive_avgpool", "avg_pool2d": "avgpool", "max_pool2d": "maxpool",
          "avg_pool1d": "avgpool", "max_pool1d": "maxpool", "interpolate": "upsample", "getitem": "getitem",
          "linear": "linear", "conv2d": "conv2d", "batch_norm": "batchnorm", "layer_norm": "layernorm",
          "group_norm": "groupnorm", "softmax": "softmax", "log_softmax": "softmax", "pad": "pad",
          "elu": "elu", "softplus": "softplus", "mish": "mish", "prelu": "prelu",
          "silu_": "silu", "hardswish_": "hardswish", "hardsigmoid_": "hardsigmoid", "relu6_": "relu6",
          "hardtanh_": "hardtanh", "leaky_relu_": "leaky_relu", "dropout_": "dropout", "_log_softmax": "softmax",
          "_softmax": "softmax", "alias": _ALIAS, "lift_fresh_copy": _ALIAS,
          "matmul": "matmul", "bmm": "matmul", "mm": "matmul", "scaled_dot_product_attention": "sdpa",
          "expand": "expand", "expand_as": "expand", "select": "getitem", "slice": "getitem", "index": "getitem",
          "split_with_sizes": "split", "upsample_nearest2d": "upsample", "upsample_bilinear2d": "upsample"}
FUNCTION_OPS = {**_ELEMENTWISE, **_ACTIVATIONS, **_SHAPE}


def target_name(n: fx.Node) -> str:
    """The plain name of an fx call target: ``add``, ``relu``, ``flatten``, ``getitem``..."""
    t = n.target
    if isinstance(t, str):
        return t
    if isinstance(t, torch._ops.OpOverload):   # a torch.export graph: aten.conv2d.default -> conv2d
        return t._opname
    name = getattr(t, "__name__", str(t))
    return name.strip("_") if name.startswith("__") else name


def source_of(node: fx.Node) -> str:
    """``file:line`` of the user code that made ``node`` (from fx's recorded stack trace)."""
    hits = re.findall(r'File "([^"]+)", line (\d+)', node.stack_trace or "")
    for f, line in reversed(hits):
        f = f.replace("\\", "/")
        if "/torch/" not in f and "/tinycl/" not in f:
            return f"{f.rsplit('/', 1)[-1]}:{line}"
    return ""


def _module_of(n: fx.Node) -> tuple[str, str]:
    stack = n.meta.get("nn_module_stack") or {}
    if not stack:
        return "", ""
    path, typ = list(stack.values())[-1]
    return path, getattr(typ, "__name__", str(typ).rsplit(".", 1)[-1])  # torch.export gives type names


class Lowering:
    """Walks the fx graph once, producing the tinycl graph."""

    def __init__(self, module: nn.Module, gm: fx.GraphModule, probes: list[dict], input_shape: tuple):
        self.module, self.gm, self.p2, self.p3 = module, gm, probes[0], probes[1]
        self.input_shape = input_shape
        self.nodes: list[Node] = []
        self.name_of: dict[fx.Node, str] = {}
        self.taken: set[str] = set()
        self.params = dict(module.named_parameters())
        self.buffers = dict(module.named_buffers())
        self.param_name = {id(p): k for k, p in self.params.items()}
        self.buffer_name = {id(b): k for k, b in self.buffers.items()}
        self.frozen_stats: set[str] = set()
        self.calls: dict[str, int] = {}
        self.no_batch: set[fx.Node] = set()
        self.layout: dict[fx.Node, object] = {}

    # -- values --------------------------------------------------------------------------
    def _is_tensor(self, n) -> bool:
        return isinstance(n, fx.Node) and isinstance(self.p2.get(n), torch.Tensor)

    def const(self, a, n: fx.Node):
        """A non-tensor argument's value; refuses values that depend on the batch size."""
        if isinstance(a, fx.Node):
            v2, v3 = self.p2.get(a), self.p3.get(a)
            if isinstance(v2, torch.Tensor):
                return a
            if v2 != v3:
                raise self.error(n, "uses a value that depends on the batch size")
            return v2
        if isinstance(a, (list, tuple)):
            return type(a)(self.const(x, n) for x in a)
        if isinstance(a, slice):
            return slice(self.const(a.start, n), self.const(a.stop, n), self.const(a.step, n))
        return a

    def batchless(self, n: fx.Node) -> bool:
        """A tensor computed from parameters and buffers only (no batch dimension), e.g. a layer scale."""
        return n in self.no_batch

    def sample_shape(self, n: fx.Node):
        """One sample's output shape (see :class:`~tinycl.graph.ir.Node`); records the layout."""
        v2, v3 = self.p2[n], self.p3[n]
        if n in self.no_batch:
            if isinstance(v2, torch.Tensor) and v2.shape == v3.shape:
                return tuple(v2.shape)
            if isinstance(v2, (tuple, list)) and [t.shape for t in v2] == [t.shape for t in v3]:
                return tuple(tuple(t.shape) for t in v2)   # a parameter split in parts (q, k, v biases)
            raise self.error(n, "computes a parameter-only tensor whose shape depends on the batch")
        if isinstance(v2, (tuple, list)):
            shapes = [self._one_shape(n, a, b) for a, b in zip(v2, v3)]
            if len({lay for _, lay in shapes}) > 1:
                raise self.error(n, "returns tensors that hold the batch in different dimensions")
            self.layout[n] = shapes[0][1] if shapes else None
            return tuple(s for s, _ in shapes)
        shape, self.layout[n] = self._one_shape(n, v2, v3)
        return shape

    def _one_shape(self, n, v2, v3) -> tuple:
        lay = L.layout_of(tuple(v2.shape), tuple(v3.shape))
        if isinstance(lay, str):
            raise self.error(n, f"gives a tensor that {lay}; tinycl needs every sample computed on its own")
        return L.sample_shape(tuple(v2.shape), lay), lay

    def layout_of(self, a: fx.Node):
        """The layout of a captured tensor (:mod:`tinycl.graph.layout`); ``"none"`` for a
        parameter-only tensor, which has no batch."""
        return "none" if a in self.no_batch else self.layout.get(a)

    def check_layout(self, n: fx.Node, op: str, attrs: dict, inputs: list) -> None:
        """Refuse an op that would act along the batch, or mix samples, on a tensor whose batch is
        not its first dimension; complete the output's layout (which samples its rows hold) and
        store the input and output layouts that a reshape or expand needs."""
        lays = [self.layout_of(a) for a in inputs]
        dims = self.layout.get(n)   # (dim, size) from the probes, or None
        if n in self.no_batch or not inputs:
            return
        if op == "getitem":
            self.layout[n] = self.layout.get(inputs[0])
            return
        folded = [lay for lay in lays if lay not in (None, "none")]
        if (folded or dims is not None) and op not in L.FOLD_OK and not (op == "batchnorm" and _first(lays[0], dims)):
            d, size = (folded[0] if folded else dims)[:2]
            where = f"folded into dimension {d} with other sizes" if size > 1 else f"in dimension {d}"
            raise self.error(n, f"needs the batch as the first dimension of its input, on its own (here it is {where})")
        x, lay = inputs[0], lays[0]
        rank, bd = self.p2[x].dim(), L.batch_dim(lay)
        if lay != "none" and (op == "softmax" and attrs["dim"] % rank == bd
                              or op in ("linear", "linear_t") and bd == rank - 1
                              or op == "layernorm" and bd >= rank - len(attrs["normalized_shape"])):
            raise self.error(n, f"works along the batch dimension (dim {bd})")
        out = self._out_layout(n, op, attrs, inputs, lays, dims, folded)
        if out is False:
            raise self.error(n, "mixes the samples of the batch (one row would hold several samples, or "
                                "samples from different orders are combined)")
        self.layout[n] = out
        if op == "expand":
            attrs["src_batch"] = self.layout_of(inputs[-1])
        if op == "reshape" and (lay is not None or out is not None):
            attrs["in_batch"], attrs["out_batch"] = lay, out

    def _out_layout(self, n, op, attrs, inputs, lays, dims, folded):
        """The output's full layout, or False where it would mix samples."""
        if op in L.SHAPE_OPS and (folded or dims is not None or op == "slice"):
            if "none" in lays:
                return False
            return L.follow(op, attrs, [(tuple(self.p3[a].shape), y) for a, y in zip(inputs, lays)],
                            _shapes(self.p3[n]), dims)
        orders = {(1, 1) if y is None else y[1:] for y in lays if y != "none"}
        if len(orders) > 1:
            return False          # e.g. an add of a tensor with samples in blocks and one with them alternating
        if dims is None:
            return None if orders <= {(1, 1)} else False
        size, inner = orders.pop() if orders else (dims[1], dims[1])
        return (dims[0], size, inner) if size == dims[1] else False

    def error(self, n: fx.Node, why: str) -> UnsupportedLayerError:
        path, typ = (n.target, type(self.gm.get_submodule(n.target)).__name__) if n.op == "call_module" \
            else _module_of(n)
        what = typ if n.op == "call_module" else f"op '{target_name(n)}'"
        at = source_of(n)
        where = f"module '{path or '<root>'}'" + (f" ({typ})" if typ and n.op != "call_module" else "")
        return UnsupportedLayerError(f"{what} in {where} {why}" + (f" (at {at})" if at else ""))

    # -- naming --------------------------------------------------------------------------
    def _name(self, n: fx.Node) -> str:
        if n.op == "call_module":
            k = self.calls.get(n.target, 0)
            self.calls[n.target] = k + 1
            base = n.target if k == 0 else f"{n.target}@{k}"
        else:
            path, _ = _module_of(n)
            op = re.sub(r"_\d+$", "", n.name)
            base = f"{path}.{op}" if path else op
            if path and n.op == "call_function" and path not in self.taken and n.target != operator.getitem \
                    and is_leaf(self.module.get_submodule(path)):
                base = path   # torch.export: the one ATen call of a leaf module takes the module's name
        name, i = base, 1
        while name in self.taken:
            name, i = f"{base}_{i}", i + 1
        self.taken.add(name)
        return name

    # -- the walk ------------------------------------------------------------------------
    def run(self) -> Graph:
        out = None
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                if self.nodes and not self._is_tensor(n):
                    continue   # an optional argument fixed at its default (None, False)
                if any(nd.op == "input" for nd in self.nodes):
                    raise UnsupportedLayerError("the model's forward takes more than one input; tinycl needs one")
                self._add(n, Node("input", "input", [], shape=self.input_shape))
            elif n.op == "output":
                out = n.args[0]
                if isinstance(out, (tuple, list)) and len(out) == 1:   # torch.export returns a 1-tuple
                    out = out[0]
            elif n.op == "get_attr":
                self._get_attr(n)
            elif _updates_state(n):
                continue   # torch.export's in-place update of a buffer (num_batches_tracked += 1)
            elif self._is_tensor(n) or isinstance(self.p2.get(n), (tuple, list)) and \
                    any(isinstance(v, torch.Tensor) for v in self.p2[n]):
                self._call(n)
        if not self._is_tensor(out) or out not in self.name_of:
            raise UnsupportedLayerError("the model must return one tensor (got "
                                        f"{type(self.p2.get(out, out)).__name__}); wrap it to return the logits")
        if self.layout.get(out) is not None:
            raise UnsupportedLayerError(f"the model's output holds the batch in dimension {self.layout[out][0]} "
                                        f"(folded or moved); return a tensor with the batch first")
        self._prune(self.name_of[out])
        used = {p for nd in self.nodes for p in nd.params.values()}
        used_b = {b for nd in self.nodes for b in nd.buffers.values()}
        return Graph(self.nodes, "input", self.name_of[out], self.input_shape,
                     {k: v for k, v in self.params.items() if k in used},
                     {k: v for k, v in self.buffers.items() if k in used_b},
                     {k for k in used if not self.params[k].requires_grad}, {}, self.frozen_stats)

    def _add(self, n: fx.Node, node: Node) -> None:
        self.nodes.append(node)
        self.name_of[n] = node.name

    def _get_attr(self, n: fx.Node) -> None:
        v = self.p2[n]
        if not isinstance(v, torch.Tensor):
            return
        name = self._name(n)
        if self.param_of(n):
            node = Node(name, "param", [], params={"value": self.param_of(n)}, shape=tuple(v.shape))
        elif self.buffer_of(n):
            node = Node(name, "const", [], buffers={"value": self.buffer_of(n)}, shape=tuple(v.shape))
        else:
            raise self.error(n, "reads a tensor attribute that is neither a parameter nor a buffer")
        node.attrs["no_batch"] = True
        self.no_batch.add(n)
        self._add(n, node)

    def _call(self, n: fx.Node) -> None:
        if n.op == "call_module":
            m = self.gm.get_submodule(n.target)
            op, attrs, params, buffers = module_attrs(m, n.target, self.error_fn(n))
            if op == _ALIAS:
                self._alias(n, n.args[0])
                return
            inputs = [a for a in n.args if isinstance(a, fx.Node)]
            if len(inputs) != 1 or n.kwargs:
                raise self.error(n, "is called with more than one argument")
            path, typ = n.target, type(m).__name__
            if self.module.training and not m.training and op in ("batchnorm", "dropout", "stochastic_depth"):
                attrs["frozen"] = True
        else:
            tensors = [a for a in n.all_input_nodes if self._is_tensor(a) or a in self.no_batch]
            if tensors and all(a in self.no_batch for a in tensors):
                self.no_batch.add(n)
            op, inputs, attrs, params, buffers = self._function(n)
            if op == "expand" and inputs[-1] not in self.no_batch:
                self.no_batch.discard(n)   # a class token expanded to the batch of another tensor
            if op == _ALIAS:
                self._alias(n, inputs[0])
                return
            path, typ = _module_of(n)
            owner = self.module.get_submodule(path) if path else self.module
            if self.module.training and not owner.training and op in ("batchnorm", "dropout", "stochastic_depth"):
                attrs["frozen"] = True
        for a in inputs:
            if a not in self.name_of:
                raise self.error(n, "reads a tensor tinycl did not capture")
        shape = self.sample_shape(n)
        self.check_layout(n, op, attrs, inputs)
        node = Node(self._name(n), op, [self.name_of[a] for a in inputs], attrs, params, buffers,
                    shape, path, typ, source_of(n), self.layout.get(n))
        if attrs.pop("frozen", False):
            self.frozen_stats.add(node.name)
        if n in self.no_batch:
            node.attrs["no_batch"] = True
        self._add(n, node)

    def _alias(self, n: fx.Node, a: fx.Node) -> None:
        """``n`` returns ``a`` unchanged (contiguous, clone, Identity): the same tensor and layout."""
        self.name_of[n] = self.name_of[a]
        if a in self.layout:
            self.layout[n] = self.layout[a]

    def buffer_of(self, a) -> str | None:
        """The buffer name behind an fx ``get_attr`` node (None if it is not a buffer). A torch.export
        graph holds copies under the same names, so the name is tried before the object."""
        if isinstance(a, fx.Node) and a.op == "get_attr":
            return a.target if a.target in self.buffers else self.buffer_name.get(id(self.p2.get(a)))
        return None

    def param_of(self, a) -> str | None:
        """The parameter name behind an fx ``get_attr`` node (None if it is not a parameter)."""
        if isinstance(a, fx.Node) and a.op == "get_attr":
            return a.target if a.target in self.params else self.param_name.get(id(self.p2.get(a)))
        return None

    def _prune(self, out: str) -> None:
        """Drop nodes whose value never reaches the output (e.g. a weight read by a functional conv)."""
        live = {out}
        for nd in reversed(self.nodes):
            if nd.name in live:
                live.update(nd.inputs)
        self.nodes = [nd for nd in self.nodes if nd.name in live or nd.op == "input"]

    def error_fn(self, n):
        return lambda why: self.error(n, why)

    def _function(self, n: fx.Node):
        from .functions import lower_function
        name = target_name(n)
        op = FUNCTION_OPS.get(name)
        if op is None or (n.op == "call_function" and not _known_callable(n.target)):
            raise self.error(n, "is not supported by tinycl")
        return lower_function(self, n, op)


def _first(lay, dims) -> bool:
    """Input and output hold the batch in dim 0 (a batch norm of LeViT's ``(B * N, C)`` rows)."""
    return lay not in (None, "none") and lay[0] == 0 and dims is not None and dims[0] == 0


def _shapes(v):
    """The shape of a tensor, or a tuple of shapes for a tuple of tensors."""
    return tuple(v.shape) if isinstance(v, torch.Tensor) else tuple(tuple(t.shape) for t in v)


def _updates_state(n: fx.Node) -> bool:
    """An in-place ATen op on a module buffer (the engine keeps its own counters)."""
    t = n.target
    return isinstance(t, torch._ops.OpOverload) and t._schema.is_mutable and bool(n.args) \
        and isinstance(n.args[0], fx.Node) and n.args[0].op == "get_attr"


def _known_callable(t) -> bool:
    if isinstance(t, torch._ops.OpOverload):
        return t.namespace == "aten"
    mods = (torch, F, operator, torch.Tensor)
    if any(getattr(m, getattr(t, "__name__", ""), None) is t for m in mods):
        return True
    return getattr(t, "__module__", "") in ("torchvision.ops.stochastic_depth",)
