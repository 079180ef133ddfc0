"""Lowering of the attention calls: ``a @ b`` / ``torch.matmul`` / ``bmm`` / ``mm`` between two
tensors (activations or parameters) and ``F.scaled_dot_product_attention``.

Neither may act along the batch: the batch of every operand must be in a leading (broadcast)
dimension or, for matmul, in the rows of ``a`` / the columns of ``b``, never in the dimension
that is summed over.
"""

from __future__ import annotations

import torch.fx as fx


def _operand(low, n, a, role: str) -> fx.Node:
    if not (isinstance(a, fx.Node) and low._is_tensor(a)):
        raise low.error(n, f"has a non-tensor {role}")
    return a


def _batch_dim(low, a) -> int | None:
    lay = low.layout_of(a)
    return None if lay == "none" else 0 if lay is None else lay[0]


def lower_matmul(low, n: fx.Node):
    """(op, inputs, attrs, params, buffers) of ``a @ b``."""
    a = _operand(low, n, n.args[0] if n.args else n.kwargs.get("input"), "left operand")
    b = _operand(low, n, n.args[1] if len(n.args) > 1 else n.kwargs.get("other", n.kwargs.get("mat2")),
                 "right operand")
    ra, rb = low.p2[a].dim(), low.p2[b].dim()
    da, db = _batch_dim(low, a), _batch_dim(low, b)
    if da is not None and da == ra - 1 or db is not None and db == rb - (2 if rb > 1 else 1):
        raise low.error(n, "sums over the batch dimension (the batch is in the inner dimension of the product)")
    return "matmul", [a, b], {}, {}, {}


_SDPA_ARGS = ["query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa"]


def lower_sdpa(low, n: fx.Node):
    """(op, inputs, attrs, params, buffers) of ``F.scaled_dot_product_attention``."""
    a = {"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False}
    a.update(zip(_SDPA_ARGS, n.args))
    a.update(n.kwargs)
    q, k, v = (_operand(low, n, a[r], r) for r in ("query", "key", "value"))
    consts = {r: low.const(a[r], n) for r in ("dropout_p", "is_causal", "scale", "enable_gqa")}
    if consts["dropout_p"]:
        raise low.error(n, f"has dropout_p={consts['dropout_p']}; tinycl needs dropout_p=0 "
                           f"(set the attention dropout to 0)")
    if consts["enable_gqa"]:
        raise low.error(n, "has enable_gqa=True; not supported")
    inputs, mask = [q, k, v], "none"
    if a["attn_mask"] is not None:
        m = _operand(low, n, a["attn_mask"], "attn_mask")
        inputs.append(m)
        mask = "bool" if not low.p2[m].is_floating_point() else "float"
        if consts["is_causal"]:
            raise low.error(n, "has both attn_mask and is_causal=True")
    for t in inputs:
        d = _batch_dim(low, t)
        if d is not None and d >= low.p2[t].dim() - 2:
            raise low.error(n, "has the batch inside the attention (in the query, key or feature dimension)")
    scale = None if consts["scale"] is None else float(consts["scale"])
    return "sdpa", inputs, {"causal": bool(consts["is_causal"]), "scale": scale, "mask": mask}, {}, {}


def _batch_source(low, a) -> fx.Node | None:
    """The batch-carrying tensor a size argument was read from (``x.shape[0]``, ``x.size(0)``)."""
    flat = list(a) if isinstance(a, (list, tuple)) else [a]     # aten.expand(x, [sym_size, -1, -1])
    seen, todo = set(), [b for b in flat if isinstance(b, fx.Node)]
    while todo:
        b = todo.pop(0)
        if b in seen:
            continue
        seen.add(b)
        if low._is_tensor(b):
            if low.layout_of(b) != "none":
                return b
            continue
        todo.extend(b.all_input_nodes)
    return None


def lower_expand(low, n: fx.Node):
    """``x.expand(sizes)`` / ``x.expand_as(y)``: a broadcast view. Where a size is the batch (a
    class token ``expand(B, -1, -1)``), the tensor it was read from is a second input that only
    gives the batch size (no gradient flows to it)."""
    x = _operand(low, n, n.args[0], "input")
    if "expand_as" in str(n.target):
        return "expand", [x, _operand(low, n, n.args[1], "other")], {}, {}, {}
    if low.layout_of(x) != "none":
        return "expand", [x], {}, {}, {}
    src = None
    for a in list(n.args[1:]) + list(n.kwargs.values()):
        src = src or _batch_source(low, a)
    if src is None:
        raise low.error(n, "expands a parameter to a batch size it does not read from a tensor")
    return "expand", [x, src], {}, {}, {}


def lower_linear_computed(low, n: fx.Node, a: dict):
    """``F.linear(x, w, b)`` where ``w`` or ``b`` is computed from parameters (a bias made by
    ``torch.cat((q_bias, zeros, v_bias))``, ``in_proj_bias.chunk(3)``): op ``linear_t``, whose weight
    and bias are inputs; their gradients flow back to the parameters they were computed from."""
    x, w = a["x"], _operand(low, n, a["weight"], "weight")
    inputs = [x, w] + ([_operand(low, n, a["bias"], "bias")] if a["bias"] is not None else [])
    if any(low.layout_of(t) != "none" for t in inputs[1:]):
        raise low.error(n, "has a weight or bias computed from the batch")
    out_f, in_f = low.p2[w].shape
    return "linear_t", inputs, {"in_features": int(in_f), "out_features": int(out_f)}, {}
