"""Capture a torch ``nn.Module`` as a :class:`~tinycl.graph.ir.Graph` with ``torch.fx``.

``capture(module, input_shape)``:

1. refuses what a trace cannot see (forward hooks, parametrizations) with one line naming the
   module;
2. traces with ``torch.fx`` symbolic tracing; modules tinycl has a primitive for are leaves, every
   other module (a user's block with its own ``forward``, timm's ``BatchNormAct2d``) is traced
   through down to leaves and functional calls. A data-dependent branch is reported with the module
   and the source line;
3. runs the trace on two batch sizes (eval mode, no state changes) to learn every non-tensor value
   (shapes, sizes) and to tell the batch dimension apart;
4. lowers each traced call to one primitive (:mod:`tinycl.graph.lower`); an op tinycl lacks gives
   one line naming the op, the module path and the source line.
"""

from __future__ import annotations

import contextlib
import inspect
import traceback

import torch
from torch import fx, nn

from ..errors import TinyclError, UnsupportedLayerError
from .ir import Graph
from .lower import Lowering, is_leaf

_PROBE_BATCHES = (2, 3)


class _Tracer(fx.Tracer):
    """fx tracer with tinycl's leaf set; records where every module's output is produced."""

    def __init__(self):
        super().__init__()
        self.record_stack_traces = True
        self.module_outputs: dict[str, fx.Node] = {}
        self.failed_in: tuple[str, type] | None = None

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return is_leaf(m)

    def call_module(self, m, forward, args, kwargs):
        path = self.path_of_module(m)
        try:
            out = super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = (path, type(m))
            raise
        if isinstance(out, fx.Proxy):
            self.module_outputs.setdefault(path, out.node)
        return out


def _user_line(tb) -> str:
    """``file:line`` of the innermost frame outside torch and tinycl."""
    for frame in reversed(traceback.extract_tb(tb)):
        f = frame.filename.replace("\\", "/")
        if "/torch/" not in f and "/tinycl/graph/" not in f and "<" not in f:
            return f"{f.rsplit('/', 1)[-1]}:{frame.lineno}"
    return ""


def check_capturable(module: nn.Module) -> None:
    """Refuse hooks and parametrizations, which a trace would silently drop."""
    from torch.nn.modules import module as M
    for kind in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks"):
        if getattr(M, kind, None):
            raise UnsupportedLayerError(f"a global module hook is registered ({kind.strip('_')}); "
                                        f"tinycl cannot capture hooks: remove it")
    for path, m in module.named_modules():
        where = f"module '{path or '<root>'}' ({type(m).__name__})"
        if torch.nn.utils.parametrize.is_parametrized(m):
            raise UnsupportedLayerError(f"{where} has a parametrization; tinycl cannot capture it: "
                                        f"remove it (torch.nn.utils.parametrize.remove_parametrizations)")
        for attr in ("_forward_pre_hooks", "_forward_hooks", "_backward_hooks", "_backward_pre_hooks"):
            hooks = getattr(m, attr, None) or {}
            for h in hooks.values():
                name = type(h).__name__
                if name == "WeightNorm":
                    raise UnsupportedLayerError(f"{where} uses weight_norm (a forward pre-hook); tinycl cannot "
                                                f"capture it: remove it (torch.nn.utils.remove_weight_norm)")
                raise UnsupportedLayerError(f"{where} has a {attr.strip('_').replace('_', ' ')[:-1]} "
                                            f"({getattr(h, '__name__', name)}); tinycl cannot capture hooks: "
                                            f"remove it")


def trace(module: nn.Module, input_shape=None, dtype=torch.float32) -> tuple[fx.GraphModule, dict[str, fx.Node]]:
    """fx-trace ``module`` (in training mode, so that dropout-like calls are kept); where symbolic
    tracing fails (a branch on a tensor's shape), ``torch.export`` with a dynamic batch is tried
    before the fx error is reported."""
    try:
        return _fx_trace(module)
    except UnsupportedLayerError as fx_error:
        if input_shape is None:
            raise
        try:
            return _export_trace(module, input_shape, dtype)
        except Exception:  # noqa: BLE001 - export failed too: the fx error says more to the user
            raise fx_error from None


def _export_trace(module: nn.Module, input_shape, dtype) -> tuple[fx.GraphModule, dict[str, fx.Node]]:
    """``torch.export`` of ``module`` in training mode with a dynamic batch dimension (ATen-level graph;
    parameters and buffers as ``get_attr`` under their ``named_parameters()`` names)."""
    with _restored(module):
        module.train()
        example = torch.zeros((2, *input_shape), dtype=dtype)
        batch = torch.export.Dim("batch", min=2, max=1 << 16)
        gm = torch.export.export(module, (example,), dynamic_shapes=({0: batch},)).module()
    outputs: dict[str, fx.Node] = {}
    for n in gm.graph.nodes:   # a module's output: the last node computed inside it
        for path, _ in (n.meta.get("nn_module_stack") or {}).values():
            if path and n.op == "call_function":
                outputs[path] = n
    return gm, outputs


def _defaults(module: nn.Module) -> dict | None:
    """The forward's optional arguments after the input, fixed at their defaults (timm's
    ``forward(x, attn_mask=None)``); a required second argument is refused later."""
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return None
    rest = [p for p in sig.parameters.values() if p.kind == p.POSITIONAL_OR_KEYWORD][1:]
    fixed = {p.name: p.default for p in rest if p.default is not p.empty}
    return fixed or None


def _fx_trace(module: nn.Module) -> tuple[fx.GraphModule, dict[str, fx.Node]]:
    tracer = _Tracer()
    try:
        with _restored(module):
            module.train()
            graph = tracer.trace(module, concrete_args=_defaults(module))
    except Exception as e:  # noqa: BLE001 - any failure inside the user's forward
        where = tracer.failed_in
        at = _user_line(e.__traceback__)
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if isinstance(e, fx.proxy.TraceError) or "symbolically traced variables" in msg:
            msg = ("a Python branch or loop on a traced value (tensor values or sizes) cannot be captured; "
                   "make the branch depend on module attributes only")
        mod = f"module '{where[0] or '<root>'}' ({where[1].__name__})" if where else "the model"
        raise UnsupportedLayerError(f"cannot capture {mod}: {msg}" + (f" (at {at})" if at else "")) from None
    return fx.GraphModule(module, graph), tracer.module_outputs


class _Recorder(fx.Interpreter):
    """Runs the trace once and keeps every node's value."""

    def __init__(self, gm):
        super().__init__(gm)
        self.values: dict[fx.Node, object] = {}
        self.current: fx.Node | None = None

    def run_node(self, n):
        self.current = n
        v = super().run_node(n)
        self.values[n] = v
        return v


def _probe(gm: fx.GraphModule, module: nn.Module, input_shape, dtype) -> list[dict]:
    """Values of every node at two batch sizes; the module's flags and buffers are restored afterwards."""
    out: list[dict] = []
    rec = None
    with _restored(module):
        try:
            module.eval()
            with torch.no_grad():
                for b in _PROBE_BATCHES:
                    rec = _Recorder(gm)
                    gen = torch.Generator().manual_seed(b)
                    rec.run(torch.randn((b, *input_shape), generator=gen, dtype=dtype))
                    out.append(rec.values)
        except TinyclError:
            raise
        except Exception as e:  # noqa: BLE001 - the model does not run on this shape
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            where = _where(gm, rec.current) if rec is not None and rec.current is not None else ""
            small = any(k in msg for k in ("can't be greater than actual input", "Output size is too small"))
            what = "input too small" if small else "the module does not accept input shape"
            raise TinyclError(f"{what} {tuple(input_shape)}{where}: {msg}") from None
    return out


@contextlib.contextmanager
def _restored(module: nn.Module):
    """Put back every submodule's training flag and every buffer's value on exit (a trace or probe
    in training mode may update running statistics or counters in place)."""
    flags = {m: m.training for m in module.modules()}
    buffers = [(b, b.detach().clone()) for b in module.buffers()]
    try:
        yield
    finally:
        for m, t in flags.items():
            m.training = t
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)


def _where(gm: fx.GraphModule, n: fx.Node) -> str:
    """`` at layer 'path' (Type)`` for the node that failed."""
    if n.op == "call_module":
        return f" at layer '{n.target}' ({type(gm.get_submodule(n.target)).__name__})"
    stack = n.meta.get("nn_module_stack") or {}
    if stack:
        path, typ = list(stack.values())[-1]
        return f" at '{n.name}' in layer '{path}' ({getattr(typ, '__name__', typ)})"
    return ""


def capture(module: nn.Module, input_shape) -> Graph:
    """The :class:`Graph` of ``module`` for one sample of shape ``input_shape`` (no batch dim)."""
    if not isinstance(module, nn.Module):
        raise TinyclError(f"from_torch needs an nn.Module, got {type(module).__name__}")
    input_shape = tuple(int(s) for s in input_shape)
    check_capturable(module)
    dtype = next((p.dtype for p in module.parameters()), torch.float32)
    gm, module_outputs = trace(module, input_shape, dtype)
    probes = _probe(gm, module, input_shape, dtype)
    low = Lowering(module, gm, probes, input_shape)
    graph = low.run()
    graph.module_outputs.update({p: low.name_of[n] for p, n in module_outputs.items() if n in low.name_of})
    return graph


