"""``tinycl layers``: the nodes of a captured model with output shape, parameters and MACs."""

from __future__ import annotations

from .counts import MAC_OPS, node_counts, param_count
from .ir import Graph


def layer_rows(graph: Graph) -> list[dict]:
    """One row per compute node: name, op, module type, output shape, parameters, forward MACs or ops,
    whether the graph can be split after it (a latent layer), and where the batch is folded in
    (``batch``: ``[dim, size, inner]`` or None; ``output_shape`` is then the shape at batch 1)."""
    cuts = set(graph.cut_points())
    rows = []
    for node in graph.compute_nodes():
        c = node_counts(node, graph, 1)
        rows.append({"name": node.name, "op": node.op, "module_type": node.module_type,
                     "output_shape": list(node.shape) if node.shape and not isinstance(node.shape[0], tuple)
                     else [list(s) for s in node.shape],
                     "params": param_count(node, graph), "forward_macs": c["forward"] if node.op in MAC_OPS else 0,
                     "forward_ops": 0 if node.op in MAC_OPS else c["forward"], "split_point": node.name in cuts,
                     "batch": list(node.batch) if node.batch else None})
    return rows


def _dims(row: dict) -> list[str]:
    """The output's dims as text; where the batch is folded in, that dim reads ``B`` or ``B*size``."""
    dims = [str(v) for v in row["output_shape"]]
    if row.get("batch"):
        d, size = row["batch"][:2]
        dims[d] = "B" if size == 1 else f"B*{size}"
    return dims


def format_layers(rows: list[dict]) -> str:
    """A readable table; ``*`` marks the nodes that can be the latent layer."""
    head = f"{'':1} {'node':<34} {'op':<16} {'output':<16} {'params':>9} {'MACs':>12}"
    lines = [head, "-" * len(head)]
    for r in rows:
        shape = "x".join(_dims(r)) if r["output_shape"] and isinstance(r["output_shape"][0], int) else "tuple"
        lines.append(f"{'*' if r['split_point'] else ' ':1} {r['name'][:34]:<34} {r['op'][:16]:<16} {shape:<16} "
                     f"{r['params']:>9,} {r['forward_macs']:>12,}")
    lines.append("* = can be the latent layer (latent_layer=NAME; a module path names its last node too)")
    return "\n".join(lines)
