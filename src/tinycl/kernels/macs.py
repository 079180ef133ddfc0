"""MAC counts of the training steps of each primitive (multiply-accumulates, not FLOPs).

Conventions, shared by the kernels and the cost models in ``tinycl.hw``:
- ``forward``, ``backward_input``, ``backward_weight`` count the MACs of a dense
  implementation of each step (the input gradient of a strided conv counted without
  the zeros a naive zero-insertion would add; see ``conv2d_backward_input_dense_macs``
  for the count with them).
- ``update`` counts one MAC per parameter (``w -= lr * g``); optimizers with state
  do more, which the optimizer reports itself.
"""

from __future__ import annotations


def conv_out_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length of one spatial dimension of a convolution or pooling window."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _hw(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


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
