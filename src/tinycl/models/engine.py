"""The graph executor: runs a captured :class:`~tinycl.graph.Graph` forward and backward, no autograd.

``GraphLayer`` builds one engine op per node (:mod:`tinycl.models.build`). ``forward`` runs them in
order and frees each tensor after its last reader; ``backward`` walks them in reverse, summing the
gradients of a tensor read more than once, and skips every node that no trainable parameter and no
requested input gradient depends on. Parameters are shared objects: a module called twice shares
its weights and their gradients add up.
"""

from __future__ import annotations

import torch

from ..graph import Graph
from .build import build_op
from .layers import Layer, Param


class GraphLayer(Layer):
    """A whole captured graph as one layer (the root of a :class:`~tinycl.models.network.Network`)."""

    kind = "graph"

    def __init__(self, graph: Graph):
        super().__init__("")
        self.graph = graph
        self.pmap: dict[str, Param] = {k: Param(v.detach().clone()) for k, v in graph.params.items()}
        for k in graph.frozen:
            self.pmap[k].trainable = False
        self.bmap: dict[str, torch.Tensor] = {k: v.detach().clone() for k, v in graph.buffers.items()}
        self.nodes = [n for n in graph.nodes if n.op != "input"]
        self.ops = {n.name: build_op(n, self.pmap, self.bmap, n.name in graph.frozen_stats) for n in self.nodes}
        self._plan()

    def _plan(self) -> None:
        """Per-node steps with everything the passes would otherwise look up: the op, its inputs, its
        kind, the tensors to free after it (last readers), and which inputs need a gradient."""
        g = self.graph
        last_use: dict[str, int] = {}
        for i, n in enumerate(self.nodes):
            for x in n.inputs:
                last_use[x] = i
        self.needs: dict[str, bool] = {g.input: False}
        self.needs_from_input: dict[str, bool] = {g.input: True}
        for n in self.nodes:
            own = any(self.pmap[p].trainable for p in n.params.values())
            stop = getattr(self.ops[n.name], "stops_gradient", False)
            self.needs[n.name] = not stop and (own or any(self.needs[i] for i in n.inputs))
            self.needs_from_input[n.name] = not stop and (own or any(self.needs_from_input[i] for i in n.inputs))
        readers: dict[str, int] = {}
        for n in self.nodes:
            for x in n.inputs:
                readers[x] = readers.get(x, 0) + 1
        self.read_twice = {k for k, c in readers.items() if c > 1}   # their gradients are sums
        self.steps = []   # forward: (name, op, inputs, kind, getitem index, tensors to free after it)
        for i, n in enumerate(self.nodes):
            op = self.ops[n.name]
            kind = ("getitem" if n.op == "getitem" else "leaf" if n.op in ("param", "const")
                    else "many" if hasattr(op, "forward_many") else "one")
            frees = tuple(k for k in dict.fromkeys(n.inputs) if last_use[k] == i and k != g.output)
            self.steps.append((n.name, op, tuple(n.inputs), kind, n.attrs.get("index"), frees))
        # backward, one list per mode (need_input False / True), reversed: (name, op, inputs, kind,
        # index, parts, runs, want, simple); ``simple``: one input, read once, so its gradient is stored
        self.back_steps = {}
        for need_input, needs in ((False, self.needs), (True, self.needs_from_input)):
            rows = []
            for n, (name, op, inputs, kind, index, _) in zip(reversed(self.nodes), reversed(self.steps)):
                want = tuple(needs[k] for k in inputs)
                parts = len(g[inputs[0]].shape) if kind == "getitem" else 0
                simple = kind == "one" and inputs[0] not in self.read_twice
                rows.append((name, op, inputs, kind, index, parts, needs[name], want, simple))
            self.back_steps[need_input] = rows
        # a plain chain (each node reads only the one before it): run it without the tensor table
        prev, self.chain = g.input, True
        for n, step in zip(self.nodes, self.steps):
            self.chain &= n.inputs == [prev] and step[3] == "one"
            prev = n.name
        self.chain &= prev == g.output

    # -- passes ---------------------------------------------------------------------------
    def forward(self, x, ctx):
        if self.chain:
            for step in self.steps:
                x = step[1].forward(x, ctx)
            return x
        vals = {self.graph.input: x}
        for name, op, inputs, kind, index, frees in self.steps:
            if kind == "one":
                y = op.forward(vals[inputs[0]], ctx)
            elif kind == "many":
                y = op.forward_many([vals[k] for k in inputs], ctx)
            elif kind == "getitem":
                y = vals[inputs[0]][index]
            else:
                y = op.forward(None, ctx)
            vals[name] = y
            for k in frees:
                del vals[k]
        return vals[self.graph.output]

    def backward(self, dy, ctx, need_input=True):
        steps = self.back_steps[need_input]
        if self.chain:
            return self._chain_backward(dy, ctx, need_input, steps)
        grads: dict[str, object] = {self.graph.output: dy}
        owned: set[str] = set()   # gradients held only by ``grads``: later sums may add into them in place
        twice = self.read_twice
        for name, op, inputs, kind, index, parts, runs, want, simple in steps:
            g = grads.pop(name, None)
            if g is None or not runs:
                op.saved = None
                continue
            if simple:
                gx = op.backward(g, ctx, want[0])
                if want[0] and gx is not None:
                    grads[inputs[0]] = gx
                continue
            if name in twice:
                owned.discard(name)
            if kind == "getitem":
                self._add_part(grads, inputs[0], index, g, parts)
                continue
            if kind == "leaf":
                op.backward(g, ctx)
                continue
            outs = op.backward_many(g, ctx, want) if kind == "many" else (op.backward(g, ctx, want[0]),)
            for k, w, gx in zip(inputs, want, outs):
                if w and gx is not None:
                    if k in twice:
                        self._accumulate(grads, owned, k, gx, g)
                    else:
                        grads[k] = gx
        return grads.get(self.graph.input) if need_input else None

    @staticmethod
    def _chain_backward(dy, ctx, need_input, steps):
        """Backward of a plain chain: stops at the first node nothing before it needs a gradient."""
        for i, (_, op, _, _, _, _, runs, want, _) in enumerate(steps):
            if not runs:
                for step in steps[i:]:
                    step[1].saved = None
                return None
            dy = op.backward(dy, ctx, want[0])
        return dy if need_input else None

    @staticmethod
    def _accumulate(grads: dict, owned: set, k: str, gx: torch.Tensor, dy) -> None:
        """Add ``gx`` into the gradient of tensor ``k`` (read by several nodes), in place when safe.

        ``gx`` is fresh memory unless it shares storage with the ``dy`` its op received (add and
        reshapes pass ``dy`` through); only fresh, unshared tensors are written in place."""
        fresh = not isinstance(dy, torch.Tensor) or \
            gx.untyped_storage().data_ptr() != dy.untyped_storage().data_ptr()
        prev = grads.get(k)
        if prev is None:
            grads[k] = gx
            if fresh:
                owned.add(k)
        elif k in owned:
            prev.add_(gx)
        elif fresh:
            grads[k] = gx.add_(prev)
            owned.add(k)
        else:
            grads[k] = prev + gx
            owned.add(k)

    @staticmethod
    def _add_part(grads, parent, index, g, count):
        parts = grads.get(parent)
        if parts is None:
            parts = [None] * count
            grads[parent] = parts
        parts[index] = g if parts[index] is None else _sum(parts[index], g)

    # -- parameters -------------------------------------------------------------------------
    def named_params(self):
        yield from self.pmap.items()

    def named_buffers(self):
        yield from self.bmap.items()

    def layers(self):
        for n in self.nodes:
            yield self.ops[n.name]


def _sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a + b without writing into a tensor some op may still hold."""
    return a + b
