"""The captured graph: one representation of a network that every part of tinycl reads.

A :class:`Graph` is a list of :class:`Node` in execution (topological) order. Each node is one
explicit primitive (``conv2d``, ``add``, ``cat``, ``batchnorm``, ...) with its attributes, the
names of the tensors it reads, the parameters it uses (names as in ``module.named_parameters()``)
and the shape of one sample of its output (the batch dimension left out).

The engine (:mod:`tinycl.models.engine`), the INT8 front, the MAC and byte counts, the workload of
the cost models and the accelerator models all walk this one structure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import TinyclError


@dataclass
class Node:
    """One primitive. ``inputs`` are node names (tensors); constants live in ``attrs``.

    ``params`` maps the op's local role (``weight``, ``bias``, ...) to a parameter name of the
    graph; ``buffers`` likewise for buffers (``running_mean``...). ``shape`` is one sample's output
    shape (no batch dimension); a node with several outputs (``split``) has a tuple of shapes and
    is read through ``getitem`` nodes. ``module`` is the module path the op came from (``""`` for
    the root), ``source`` the user's source line where known.

    ``batch`` is None when the batch is the output's own first dimension (``shape`` leaves it out).
    Otherwise (attention heads, patches) it is ``(dim, size, inner)``: the batch is folded into
    dimension ``dim`` of the output, whose length is ``size`` per sample, entry ``i`` belonging to
    sample ``(i // inner) % batch`` (:mod:`tinycl.graph.layout`); ``shape`` is then the full shape
    at batch 1, so ``numel`` is still one sample's elements.
    """

    name: str
    op: str
    inputs: list[str]
    attrs: dict = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    buffers: dict[str, str] = field(default_factory=dict)
    shape: tuple = ()
    module: str = ""
    module_type: str = ""
    source: str = ""
    batch: tuple | None = None

    @property
    def numel(self) -> int:
        """Elements of one sample's output (summed over outputs for multi-output nodes)."""
        if self.shape and isinstance(self.shape[0], tuple):
            return sum(_prod(s) for s in self.shape)
        return _prod(self.shape)


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


@dataclass
class Graph:
    """Nodes in execution order, the parameters and buffers they use, and where modules end.

    ``params`` and ``buffers`` are keyed by ``named_parameters()`` / ``named_buffers()`` names;
    ``frozen`` names the parameters with ``requires_grad=False``. ``module_outputs`` maps a module
    path (any module, leaf or not) to the node that produced its output, so that a latent layer can
    be named by a module (``block2_1``, ``features.6``) or by a node.
    """

    nodes: list[Node]
    input: str
    output: str
    input_shape: tuple
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    frozen: set[str] = field(default_factory=set)
    module_outputs: dict[str, str] = field(default_factory=dict)
    frozen_stats: set[str] = field(default_factory=set)   # nodes of eval-mode BN/dropout in a training model

    def __post_init__(self):
        self._by_name = {n.name: n for n in self.nodes}

    def __getitem__(self, name: str) -> Node:
        return self._by_name[name]

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def consumers(self) -> dict[str, list[str]]:
        """Node name -> names of the nodes that read it (in order)."""
        out: dict[str, list[str]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                out[i].append(n.name)
        return out

    def compute_nodes(self) -> list[Node]:
        """The nodes that do work (not the input placeholder)."""
        return [n for n in self.nodes if n.op != "input"]

    def resolve(self, name: str) -> str:
        """A node name for ``name``: a node, or a module path (its output node)."""
        if name in self._by_name and self._by_name[name].op != "input":
            return name
        if name in self.module_outputs:
            return self.module_outputs[name]
        points = split_candidates(self)
        more = ", ..." if len(points) > 12 else ""
        raise TinyclError(f"no layer named {name!r}; split points: {', '.join(points[:12])}{more} "
                          f"(`tinycl layers` lists every node)")

    def cut_points(self) -> list[str]:
        """Nodes where the graph can be cut in two: the only live tensor after them is their output."""
        return split_candidates(self)

    def split(self, name: str) -> tuple["Graph", "Graph"]:
        """(front, back) at node or module ``name``: front ends with it, back starts from its output."""
        cut = self.resolve(name)
        if cut not in self.cut_points():
            raise TinyclError(f"cannot split at {name!r}: other tensors cross it (e.g. a residual branch); "
                              f"split points: {', '.join(self.cut_points()[:8])}...")
        idx = [n.name for n in self.nodes].index(cut)
        front_nodes, back_nodes = self.nodes[:idx + 1], self.nodes[idx + 1:]
        if not back_nodes:
            raise TinyclError(f"cannot split at {name!r}: it is the output; nothing is left to train")
        latent = self[cut]
        head = Node(cut, "input", [], shape=latent.shape)
        front = self._sub(front_nodes, self.input, cut, self.input_shape)
        back = self._sub([head, *back_nodes], cut, self.output, latent.shape)
        return front, back

    def _sub(self, nodes, inp, out, input_shape) -> "Graph":
        used_p = {p for n in nodes for p in n.params.values()}
        used_b = {b for n in nodes for b in n.buffers.values()}
        names = {n.name for n in nodes}
        return Graph(list(nodes), inp, out, tuple(input_shape),
                     {k: v for k, v in self.params.items() if k in used_p},
                     {k: v for k, v in self.buffers.items() if k in used_b},
                     {k for k in self.frozen if k in used_p},
                     {m: n for m, n in self.module_outputs.items() if n in names and n != inp},
                     {n for n in self.frozen_stats if n in names})


def split_candidates(g: Graph) -> list[str]:
    """Compute nodes after which exactly one tensor (their own output) is still needed."""
    last_use: dict[str, int] = {}
    for i, n in enumerate(g.nodes):
        for x in n.inputs:
            last_use[x] = i
    out, live = [], set()
    for i, n in enumerate(g.nodes):
        live = {x for x in live if last_use.get(x, -1) > i}
        if last_use.get(n.name, -1) > i or n.name == g.output:
            live.add(n.name)
        if n.op not in ("input", "getitem") and live == {n.name} and n.name != g.output and n.batch is None \
                and not isinstance(n.shape[0] if n.shape else None, tuple):
            out.append(n.name)
    return out
