"""Geometry and cost of each primitive: output sizes (conv, pool with ceil_mode, adaptive
pool, upsampling), MAC counts of the training steps of conv / linear (multiply-accumulates,
not FLOPs) and operation counts of the other graph ops (adds, multiplies, compares).

Conventions, shared by the kernels and the cost models in ``tinycl.hw``:
- ``forward``, ``backward_input``, ``backward_weight`` count the MACs of a dense
  implementation of each step (the input gradient of a strided conv counted without
  the zeros a naive zero-insertion would add; see ``conv2d_backward_input_dense_macs``
  for the count with them).
- ``update`` counts one MAC per parameter (``w -= lr * g``); optimizers with state
  do more, which the optimizer reports itself.
"""

from __future__ import annotations

import math

from ..errors import TinyclError


def pair(v) -> tuple[int, int]:
    """An int or an (h, w) sequence as an (h, w) tuple of ints: the one place that normalises sizes."""
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[-1]))


def conv_out_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length of one spatial dimension of a convolution or pooling window."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


_hw = pair


def conv2d_macs(n: int, cin: int, cout: int, hin: int, win: int, kh: int, kw: int,
                stride=1, padding=0, groups: int = 1) -> dict[str, int]:
    """MACs of each step of a Conv2d on an ``n x cin x hin x win`` input.

    ``stride`` and ``padding`` are an int or an (h, w) pair.
    forward = n * cout * ho * wo * (cin / groups) * kh * kw, and the input and weight
    gradients are the same count (each output element meets each weight once).
    """
    (sh, sw), (ph, pw) = _hw(stride), _hw(padding)
    ho = conv_out_size(hin, kh, sh, ph)
    wo = conv_out_size(win, kw, sw, pw)
    m = n * cout * ho * wo * (cin // groups) * kh * kw
    params = cout * (cin // groups) * kh * kw
    return {"forward": m, "backward_input": m, "backward_weight": m, "update": params}


def conv2d_backward_input_dense_macs(n: int, cin: int, cout: int, hin: int, win: int, kh: int, kw: int,
                                     stride: int = 1, padding: int = 0, groups: int = 1) -> int:
    """MACs of the input gradient computed as a stride-1 conv over a zero-inserted dY.

    This is what a dense array does without stride-aware dataflow: every input pixel
    meets all kh*kw taps, ``n * cin * hin * win * (cout / groups) * kh * kw``; the
    ratio to :func:`conv2d_macs` is about ``stride**2``.
    """
    return n * cin * hin * win * (cout // groups) * kh * kw


def linear_macs(n: int, fin: int, fout: int, bias: bool = True) -> dict[str, int]:
    """MACs of each step of a Linear layer on ``n`` samples (``n*fin*fout`` each)."""
    m = n * fin * fout
    return {"forward": m, "backward_input": m, "backward_weight": m,
            "update": fin * fout + (fout if bias else 0)}


# ---------------------------------------------------------------------------------------------
# Geometry of the graph ops: pooling with ceil_mode, 1d conv, adaptive pooling, upsampling.
# ---------------------------------------------------------------------------------------------

def pool_out_size(size: int, kernel: int, stride: int, padding: int = 0, dilation: int = 1,
                  ceil_mode: bool = False) -> int:
    """Output length of one dimension of a max or average pool (torch's rule).

    With ``ceil_mode`` the division rounds up, but the last window must start inside the
    input or its left padding: ``(out - 1) * stride < size + padding``.
    """
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def pool_window_sizes(size: int, kernel: int, stride: int, padding: int = 0, ceil_mode: bool = False,
                      include_pad: bool = False) -> list[int]:
    """Elements in each window of one pooled dimension (dilation 1), in output order.

    ``include_pad=False``: the input elements the window covers (the divisor of an average
    pool with ``count_include_pad=False``, and the elements a max pool compares).
    ``include_pad=True``: the window clipped to the padded input ``[-padding, size + padding)``
    (the divisor with ``count_include_pad=True``; a ceil_mode window past it is cut).
    """
    lo, hi = (-padding, size + padding) if include_pad else (0, size)
    out = pool_out_size(size, kernel, stride, padding, 1, ceil_mode)
    starts = [o * stride - padding for o in range(out)]
    return [max(0, min(s + kernel, hi) - max(s, lo)) for s in starts]


def adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each window of an adaptive pool: ``floor(i*size/out)``, ``ceil((i+1)*size/out)``."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def upsample_out_size(size: int, scale: float | None = None, out: int | None = None) -> int:
    """Output length of one upsampled dimension: ``out`` if given, else ``floor(size * scale)``."""
    if out is not None:
        return int(out)
    return int(math.floor(size * scale))


def conv1d_macs(n: int, cin: int, cout: int, lin: int, k: int, stride: int = 1, padding: int = 0,
                groups: int = 1) -> dict[str, int]:
    """MACs of each step of a Conv1d on an ``n x cin x lin`` input: a Conv2d with H = 1."""
    return conv2d_macs(n, cin, cout, 1, lin, 1, k, (1, stride), (0, padding), groups)


# ---------------------------------------------------------------------------------------------
# Operation counts (adds, multiplies, compares, one per transcendental; not MACs) of the graph ops.
# Each returns {"forward", "backward_input", "backward_weight", "update"}.
# ---------------------------------------------------------------------------------------------

def _ops(forward: int, backward_input: int, backward_weight: int = 0, update: int = 0) -> dict[str, int]:
    return {"forward": int(forward), "backward_input": int(backward_input),
            "backward_weight": int(backward_weight), "update": int(update)}


def _numel(shape) -> int:
    p = 1
    for s in shape:
        p *= int(s)
    return p


def reduce_to_ops(out_numel: int, operand_numel: int) -> int:
    """Adds that sum a gradient of ``out_numel`` elements back to an operand of ``operand_numel``."""
    return out_numel - operand_numel


# ops per output element of each binary op: (forward, gradient of a, gradient of b).
# add: y = a + b, da = dy, db = dy.  sub: db = -dy.  mul: da = dy * b, db = dy * a.
# div: da = dy / b, db = -(dy * y) / b (multiply, divide, negate).
BINARY_OPS = {"add": (1, 0, 0), "sub": (1, 0, 1), "mul": (1, 1, 1), "div": (1, 1, 3)}


def binary_ops(kind: str, out_shape, a_shape=None, b_shape=None) -> dict[str, int]:
    """Ops of ``y = a <kind> b`` with broadcasting; a ``None`` shape is a Python scalar (no gradient).

    ``backward_input`` = per-element gradient ops of each tensor operand plus the adds that
    reduce its gradient to its own shape (:func:`reduce_to_ops`).
    """
    if kind not in BINARY_OPS:
        raise TinyclError(f"no op count for elementwise op {kind!r} (known: {', '.join(BINARY_OPS)})")
    f, ga, gb = BINARY_OPS[kind]
    m = _numel(out_shape)
    back = 0
    for g, shape in ((ga, a_shape), (gb, b_shape)):
        if shape is not None:
            back += g * m + reduce_to_ops(m, _numel(shape))
    return _ops(f * m, back)


# ops per element: (forward, backward). Exp, tanh and erf count one op each.
# relu: 1 compare / 1 select.  hardsigmoid: relu6(x + 3) / 6: add, 2 compares, mul;
#   backward dy / 6 inside (-3, 3): 2 compares, mul.
# hardswish: x * hardsigmoid(x): 5; backward dy * (2x + 3) / 6 inside, dy above 3: 2 compares, mul, add, mul.
# sigmoid: neg, exp, add, reciprocal; backward from y: dy * y * (1 - y): sub, 2 mul.
# tanh: 1; backward from y: dy * (1 - y * y): mul, sub, mul.
# silu: x * sigmoid(x): 5; backward: sigmoid (4), dy * s * (1 + x * (1 - s)): sub, mul, add, 2 mul.
# gelu "none": 0.5 x (1 + erf(x / sqrt 2)): mul, erf, add, 2 mul; backward: the cdf (4), the pdf
#   exp(-x*x/2) / sqrt(2 pi) (mul, mul, exp, mul), dy * (cdf + x * pdf) (mul, add, mul).
# gelu "tanh": 0.5 x (1 + tanh(c (x + 0.044715 x^3))): 2 mul (x^3), mul, add, mul, tanh, add, 2 mul;
#   backward: the inner value and tanh (6), 1 - t*t (2), the inner derivative 1 + 3*0.044715 x^2 (3),
#   the product with c (1), 0.5 (1 + t) + 0.5 x (1 - t^2) inner' (5), dy * (1).
# The ReLU family keeps activations.elementwise_ops (one op per element per step).
ACTIVATION_OPS = {"relu": (1, 1), "hardsigmoid": (4, 3),
                  "hardswish": (5, 5), "sigmoid": (4, 3), "tanh": (1, 3), "silu": (5, 9),
                  "gelu": (5, 11), "gelu_tanh": (9, 18)}


def activation_ops(name: str, numel: int) -> dict[str, int]:
    """Ops of a pointwise activation on ``numel`` elements (table ``ACTIVATION_OPS``)."""
    if name not in ACTIVATION_OPS:
        raise TinyclError(f"no op count for activation {name!r} (known: {', '.join(ACTIVATION_OPS)})")
    f, b = ACTIVATION_OPS[name]
    return _ops(f * numel, b * numel)


def reduce_ops(in_numel: int, out_numel: int, mean: bool = False) -> dict[str, int]:
    """Sum (or mean) of ``in_numel`` values into ``out_numel``: ``in - out`` adds (+ ``out`` multiplies
    for a mean) forward; backward broadcasts ``dy`` (copies; ``out`` multiplies for a mean)."""
    m = out_numel if mean else 0
    return _ops(in_numel - out_numel + m, m)


def shape_ops() -> dict[str, int]:
    """cat, split, chunk, permute, transpose, reshape, flatten, slice, select, contiguous: no
    arithmetic (their cost is data movement, in bytes, counted by the memory planner)."""
    return _ops(0, 0)


def stochastic_depth_ops(numel: int) -> dict[str, int]:
    """One multiply per element forward (``x * mask``) and backward (``dy * mask``)."""
    return _ops(numel, numel)


def layernorm_ops(numel: int, normalized_numel: int, affine: bool = True, bias: bool = True) -> dict[str, int]:
    """The batch-norm convention per element (4 forward, 6 input gradient, 2 weight gradient:
    ``dy * xhat`` and ``dy`` summed), ``normalized_numel`` parameters each for gamma and beta."""
    params = normalized_numel * (int(affine) + int(affine and bias))
    return _ops(4 * numel, 6 * numel, 2 * numel if affine else 0, params)


def pool2d_ops(n: int, c: int, hw, kernel, stride=None, padding=0, ceil_mode: bool = False,
               kind: str = "max") -> dict[str, int]:
    """Ops of a 2d max or average pool (dilation 1), windows clipped to the input.

    Separable windows: the input elements read are ``n * c * sum(h windows) * sum(w windows)``
    (:func:`pool_window_sizes`). Max: that many compares forward, one scatter-add per output
    backward. Average: those adds plus one multiply per output forward; backward one multiply
    per output plus one add per window element.
    """
    (kh, kw), (ph, pw) = _hw(kernel), _hw(padding)
    sh, sw = (kh, kw) if stride is None else _hw(stride)
    wh = pool_window_sizes(hw[0], kh, sh, ph, ceil_mode)
    ww = pool_window_sizes(hw[1], kw, sw, pw, ceil_mode)
    reads = n * c * sum(wh) * sum(ww)
    outs = n * c * len(wh) * len(ww)
    if kind == "max":
        return _ops(reads, outs)
    return _ops(reads + outs, reads + outs)


def pool1d_ops(n: int, c: int, length: int, kernel: int, stride=None, padding: int = 0, ceil_mode: bool = False,
               kind: str = "max") -> dict[str, int]:
    """:func:`pool2d_ops` with H = 1."""
    return pool2d_ops(n, c, (1, length), (1, kernel), (1, kernel if stride is None else stride), (0, padding),
                      ceil_mode, kind)


def adaptive_avgpool_ops(n: int, c: int, in_sizes, out_sizes) -> dict[str, int]:
    """Adaptive average pool (1d or 2d): adds over every window element plus one multiply per
    output, forward and backward (windows from :func:`adaptive_windows`, which may overlap)."""
    reads, outs = n * c, n * c
    for i, o in zip(in_sizes, out_sizes):
        reads *= sum(e - s for s, e in adaptive_windows(int(i), int(o)))
        outs *= int(o)
    return _ops(reads + outs, reads + outs)


def upsample_ops(out_numel: int, mode: str = "nearest") -> dict[str, int]:
    """Nearest: copies forward (0 ops), one add per output backward. Bilinear: 4 multiplies and
    3 adds per output forward, 4 multiplies and 4 scatter-adds per output backward."""
    if mode == "nearest":
        return _ops(0, out_numel)
    return _ops(7 * out_numel, 8 * out_numel)
