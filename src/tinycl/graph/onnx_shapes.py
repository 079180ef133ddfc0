"""Shapes for the ONNX importer: ONNX shape inference at two batch sizes, and the shape arithmetic
(``Shape -> Gather -> Div -> Concat``) folded so that inference can follow reshapes and slices."""

from __future__ import annotations

import numpy as np

from ..errors import TinyclError

NO_FOLD = ("Shape", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
           "Bernoulli")   # never evaluated at import: Shape needs the batch, the rest are random
PROBES = (7, 11)


def _infer(proto):
    import onnx
    try:
        return onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception as e:  # noqa: BLE001 - inconsistent model
        raise TinyclError(f"ONNX shape inference failed: {str(e).splitlines()[0] if str(e) else e}") from None


def infer_shapes(model) -> dict[str, list | None]:
    """Value name -> dims after shape inference. A symbolic batch is inferred at two sizes (7 and 11),
    so that reshape targets computed from ``Shape`` resolve; a dim that follows the batch is written
    ``"N"`` and one that changes otherwise ``"?"`` (the value mixes the batch into its features)."""
    inp = model.graph.input[0]
    first = inp.type.tensor_type.shape.dim[0] if inp.type.tensor_type.shape.dim else None
    if first is None or first.HasField("dim_value"):
        g = _infer(model).graph
        return {v.name: _dims(v) for v in [*g.input, *g.value_info, *g.output]}
    runs = []
    for b in PROBES:
        m = type(model)()
        m.CopyFrom(model)
        del m.graph.value_info[:]
        for o in m.graph.output:
            o.type.tensor_type.ClearField("shape")
        m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = b
        g = _infer(m).graph
        runs.append({v.name: _dims(v) for v in [*g.input, *g.value_info, *g.output]})
    out = {}
    for k, a in runs[0].items():
        b = runs[1].get(k)
        if a is None or b is None or len(a) != len(b):
            out[k] = None
        elif (a[:1], b[:1]) == ([PROBES[0]], [PROBES[1]]):
            out[k] = ["N", *(x if x == y else "?" for x, y in zip(a[1:], b[1:]))]
        else:
            out[k] = ["?" if x != y else x for x, y in zip(a, b)]
    return out


def _dims(value_info) -> list | None:
    """Dims of a value (ints, or strings for symbolic / unknown dims); None if the rank is unknown."""
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]


def shape_slice(d: np.ndarray, node) -> np.ndarray:
    """What ``Shape`` (with its start / end attributes) returns for dims ``d``."""
    start = next((a.i for a in node.attribute if a.name == "start"), 0)
    end = next((a.i for a in node.attribute if a.name == "end"), None)
    return d[start:end]


def pin_reshapes(imp, model) -> bool:
    """Give Reshapes with a computed target (``x.view(n, g, c // g, h, w)``, where shape inference
    loses ``c // g``) a constant target, when only one dim is unknown: it follows from the
    per-sample size. Then inference can follow the tensors after them."""
    from onnx import numpy_helper
    changed = False
    for node in model.graph.node:
        if node.op_type != "Reshape" or node.input[1] in imp.consts:
            continue
        d, di = imp.dims.get(node.output[0]), imp.dims.get(node.input[0])
        if not d or not di or d[0] != di[0] or any(not isinstance(x, int) for x in di[1:]):
            continue
        unknown = [i for i, x in enumerate(d) if i and not isinstance(x, int)]
        known = int(np.prod([x for i, x in enumerate(d) if i and i not in unknown]))
        if len(unknown) != 1 or known == 0 or int(np.prod(di[1:])) % known:
            continue
        target = np.array([0, *(int(np.prod(di[1:])) // known if i in unknown else x
                                for i, x in enumerate(d) if i)], dtype=np.int64)
        name = f"{node.output[0]}::target"
        imp.consts[name] = target
        model.graph.initializer.append(numpy_helper.from_array(target, name))
        node.input[1] = name
        changed = True
    return changed

def fold_shapes(imp, model) -> bool:
    """Fold shape arithmetic that does not depend on the batch size (``x.chunk(2, 1)`` slices at
    ``Shape(x)[1] // 2``): it is evaluated with the batch at both probe sizes, and a result that is
    the same at both becomes a constant (the node leaves the model, its output an initializer)."""
    from onnx import numpy_helper
    probes: dict[str, list] = {}
    folded = []
    for node in model.graph.node:
        if node.op_type == "Shape":
            d = imp.dims.get(node.input[0])
            if d and all(isinstance(x, int) for x in d[1:]) and (d[0] == "N" or isinstance(d[0], int)):
                probes[node.output[0]] = [shape_slice(np.array([b if d[0] == "N" else d[0], *d[1:]],
                                                                dtype=np.int64), node) for b in PROBES]
            continue
        if node.op_type in NO_FOLD or not node.input or not all(
                not x or x in imp.consts or x in probes for x in node.input):
            continue
        outs = [imp.evaluate(node, {x: probes[x][k] if x in probes else imp.consts[x]
                                      for x in node.input if x}) for k in range(len(PROBES))]
        for i, name in enumerate(node.output):
            vals = [np.asarray(o[i]) for o in outs]
            if vals[0].shape == vals[1].shape and np.array_equal(vals[0], vals[1]):
                imp.consts[name] = vals[0]
            else:
                probes[name] = vals
        if all(not o or o in imp.consts for o in node.output):
            folded.append(node)
    for node in folded:
        imp.folded.add(node.output[0])
        model.graph.node.remove(node)
        model.graph.initializer.extend(numpy_helper.from_array(imp.consts[o], o) for o in node.output if o)
    return bool(folded)
