"""Work of every graph node: MACs (conv, linear) or element operations (everything else), per step.

One function, :func:`node_counts`, that the workload of the cost models, ``tinycl layers``,
``train_macs`` and the benchmarks all use. Conventions (E = output elements of the step, C =
channels), besides the conv / linear MACs of :mod:`tinycl.kernels.macs`:

=================  ========  ===============  ===============  ======
op                 forward   backward_input   backward_weight  update
=================  ========  ===============  ===============  ======
batchnorm          2E        3E               E                2C
layernorm          5E        8E               2E               2C
pointwise act.     E         E                0                0
add, sub, mul      E         E (each operand) 0                0
maxpool            E*k       E                0                0
avgpool            E*k       E*k              0                0
global/adaptive    Ein       Ein              0                0
mean, sum          Ein       Ein              0                0
views, cat, split  0         0                0                0
expand, take       0         E                0                0
linear_t           linear    linear in + wt   0                0
matmul             E*K       E*K per operand  0                0
sdpa               H*L*S*    2*H*L*S*(E+Ev)   0                0
                   (E+Ev)
=================  ========  ===============  ===============  ======

matmul and sdpa are MACs: ``matmul`` ``(..., M, K) @ (..., K, N)`` makes ``E = ... * M * N``
outputs of ``K`` MACs; its backward computes the gradient of each operand (a parameter operand's
included) at the same cost. ``sdpa`` has ``H`` heads (the output's leading dims), ``L`` queries,
``S`` keys, feature sizes ``E`` (queries, keys) and ``Ev`` (values): ``q @ k^T`` and ``p @ v``
forward; ``dv``, ``dp``, ``dq``, ``dk`` backward (the softmax in between is not counted).
"""

from __future__ import annotations

import math

from ..kernels.macs import conv2d_macs, linear_macs
from .ir import Graph, Node

STEPS = ("forward", "backward_input", "backward_weight", "update")
MAC_OPS = ("conv2d", "conv1d", "linear", "conv_general", "matmul", "sdpa", "linear_t")
POINTWISE = ("relu", "relu6", "leaky_relu", "hardswish", "hardsigmoid", "sigmoid", "silu", "tanh", "gelu",
             "clamp", "hardtanh", "dropout", "stochastic_depth", "elu", "softplus", "mish", "prelu")
VIEWS = ("reshape", "getitem", "detach", "param", "const", "input", "slice", "permute", "cat", "split")


def _prod(shape) -> int:
    return int(math.prod(shape))


def param_count(node: Node, graph: Graph) -> int:
    """Elements of the parameters a node uses (shared parameters counted at each use)."""
    return sum(graph.params[p].numel() for p in node.params.values())


def node_counts(node: Node, graph: Graph, n: int = 1) -> dict[str, int]:
    """MACs (conv / linear) or operations of each step of ``node`` for ``n`` samples."""
    zero = dict.fromkeys(STEPS, 0)
    op, a = node.op, node.attrs
    ins = graph[node.inputs[0]].shape if node.inputs else ()
    e_out = n * node.numel
    if op in ("conv2d", "conv1d"):
        k = a["kernel"] if op == "conv2d" else (1, a["kernel"][0])
        s = a["stride"] if op == "conv2d" else (1, a["stride"][0])
        p = a["padding"] if op == "conv2d" else (0, a["padding"][0])
        h, w = (ins[1], ins[2]) if op == "conv2d" else (1, ins[1])
        m = dict(conv2d_macs(n, ins[0], a["out_channels"], h, w, k[0], k[1], s, p, a["groups"]))
        m["update"] += a["out_channels"] if "bias" in node.params else 0
        return m
    if op == "conv_general":   # dilated or transposed: each input-output pair of taps, from the shapes
        k, g = _prod(a["kernel"]), a["groups"]
        small = ins if a["transposed"] else node.shape      # the side each tap is counted on
        other = node.shape[0] if a["transposed"] else ins[0]
        m = n * small[0] * _prod(small[1:]) * (other // g) * k
        params = a["out_channels"] * (a["in_channels"] // g) * k + (a["out_channels"] if "bias" in node.params else 0)
        return {"forward": m, "backward_input": m, "backward_weight": m, "update": params}
    if op == "linear":
        return dict(linear_macs(n * _prod(ins[:-1]), a["in_features"], a["out_features"], "bias" in node.params))
    if op == "linear_t":   # weight and bias are inputs: their gradients are input gradients
        m = dict(linear_macs(n * _prod(ins[:-1]), a["in_features"], a["out_features"], len(node.inputs) > 2))
        return {**zero, "forward": m["forward"], "backward_input": m["backward_input"] + m["backward_weight"]}
    if op in ("matmul", "sdpa"):
        return _attention_counts(node, graph, n)
    if op in ("expand", "take"):
        return {**zero, "backward_input": e_out}
    if op == "batchnorm":
        return {"forward": 2 * e_out, "backward_input": 3 * e_out, "backward_weight": e_out,
                "update": 2 * a.get("channels", ins[0])}
    if op == "groupnorm":
        return {"forward": 5 * e_out, "backward_input": 8 * e_out, "backward_weight": 2 * e_out if node.params else 0,
                "update": 2 * ins[0] if node.params else 0}
    if op == "softmax":
        return {**zero, "forward": 3 * e_out, "backward_input": 3 * e_out}
    if op == "layernorm":
        c = _prod(a["normalized_shape"]) if node.params else 0
        return {"forward": 5 * e_out, "backward_input": 8 * e_out, "backward_weight": 2 * e_out if c else 0,
                "update": 2 * c}
    if op in POINTWISE or op in ("add", "sub", "mul", "div"):
        return {**zero, "forward": e_out, "backward_input": e_out * max(1, len(node.inputs))}
    if op in ("maxpool", "avgpool"):
        k = _prod(a["kernel"])
        return {**zero, "forward": e_out * k, "backward_input": e_out * (k if op == "avgpool" else 1)}
    if op in ("adaptive_avgpool", "mean", "sum", "upsample"):
        e_in = n * _prod(ins)
        return {**zero, "forward": max(e_in, e_out), "backward_input": max(e_in, e_out)}
    return zero


def _attention_counts(node: Node, graph: Graph, n: int) -> dict[str, int]:
    """MACs of ``matmul`` and ``sdpa`` for ``n`` samples (see the table above)."""
    zero = dict.fromkeys(STEPS, 0)
    first = graph[node.inputs[0]].shape
    if node.op == "matmul":
        m = n * node.numel * int(first[-1])
        return {**zero, "forward": m, "backward_input": m * len(node.inputs)}
    length, e = int(first[-2]), int(first[-1])
    keys, ev = int(graph[node.inputs[1]].shape[-2]), int(node.shape[-1])
    heads = n * node.numel // (length * ev)
    m = heads * length * keys * (e + ev)
    return {**zero, "forward": m, "backward_input": 2 * m}


def graph_counts(graph: Graph, n: int = 1, trainable_from: int = 0) -> list[tuple[Node, dict[str, int]]]:
    """Counts of the steps the learner computes when nodes from index ``trainable_from`` train.

    Nodes before it run forward only. A node's input gradient is counted only where something
    upstream of it (in the trained part) has a parameter; its weight gradient and update only
    where it has parameters that are not frozen.
    """
    out, needs = [], {graph.input: False}
    nodes = graph.compute_nodes()
    for i, node in enumerate(nodes):
        c = node_counts(node, graph, n)
        trained = i >= trainable_from
        own = trained and any(p not in graph.frozen for p in node.params.values())
        upstream = trained and any(needs.get(x, False) for x in node.inputs)
        needs[node.name] = own or upstream
        if not trained:
            c = {**c, "backward_input": 0, "backward_weight": 0, "update": 0}
        else:
            if not upstream:
                c["backward_input"] = 0
            if not own:
                c["backward_weight"] = c["update"] = 0
        out.append((node, c))
    return out


def total_macs(graph: Graph, n: int = 1, trainable_from: int = 0) -> dict[str, int]:
    """Sum over conv and linear nodes of each step's MACs (see :func:`graph_counts`)."""
    total = dict.fromkeys(STEPS, 0)
    for node, c in graph_counts(graph, n, trainable_from):
        if node.op in MAC_OPS:
            for k in STEPS:
                total[k] += c[k]
    return total
