"""Where the batch lives in a captured tensor, learned from the two probe runs (batch 2 and 3).

A tensor's *layout* is ``None`` when the batch is its own first dimension (the usual case), or
``(dim, size, inner)`` when dimension ``dim`` has length ``size * batch`` (multi-head attention's
``(B * H, N, D)``, MobileViT's ``(B * P, N, C)``, the ``(3, B, H, N, D)`` of a fused qkv, or
``nn.MultiheadAttention``'s ``(N * B, E)``): entry ``i`` of that dimension belongs to sample
``(i // inner) % batch`` (``inner == size``: each sample's entries are consecutive; ``inner == 1``:
the samples alternate). Every other dimension must not depend on the batch.

Shape ops (reshape, permute, slicing, split, cat) can move the batch anywhere; :func:`follow`
tracks the sample of every element through the op at batch 3 and refuses a result where one
row of the batch dimension would hold several samples (a later op would then combine them).
"""

from __future__ import annotations

import torch

FOLD_OK = frozenset((
    "reshape", "permute", "slice", "split", "getitem", "cat", "add", "sub", "mul", "div", "relu", "relu6",
    "leaky_relu", "hardswish", "hardsigmoid", "sigmoid", "silu", "tanh", "gelu", "clamp", "hardtanh",
    "dropout", "elu", "softplus", "mish", "linear", "layernorm", "softmax", "mean", "sum", "matmul", "sdpa",
    "detach", "expand", "take", "linear_t"))   # ops that work on any layout (they never act along the batch dimension)
SHAPE_OPS = frozenset(("reshape", "permute", "slice", "split", "cat"))


def layout_of(s2: tuple, s3: tuple):
    """``None`` (batch first), ``(dim, size)`` (the caller adds ``inner``), or a string saying why
    the shapes at batch 2 and 3 do not fit any layout."""
    if len(s2) != len(s3) or not s2:
        return "has no batch dimension"
    grows = [d for d, (a, b) in enumerate(zip(s2, s3)) if a != b]
    if len(grows) != 1:
        return "has no batch dimension" if not grows else "has more than one dimension that grows with the batch"
    d = grows[0]
    a, b = s2[d], s3[d]
    if a % 2 or b != a // 2 * 3:
        return f"has a dimension whose length is not a multiple of the batch ({a} at batch 2, {b} at batch 3)"
    size = a // 2
    return None if (d, size) == (0, 1) else (d, size)


def batch_dim(layout) -> int:
    return 0 if layout is None else layout[0]


def sample_shape(s2: tuple, layout) -> tuple:
    """One sample's shape (``layout`` None) or the full shape at batch 1."""
    if layout is None:
        return tuple(s2[1:])
    d, size = layout[:2]
    return tuple(size if i == d else s for i, s in enumerate(s2))


def full_shape(shape: tuple, layout, batch: int) -> tuple:
    """The shape at ``batch`` of a tensor with per-sample ``shape`` (see :func:`sample_shape`)."""
    if layout is None:
        return (batch, *shape)
    d, size = layout[:2]
    return tuple(size * batch if i == d else s for i, s in enumerate(shape))


def sample_ids(shape3: tuple, layout) -> torch.Tensor:
    """The sample index (0, 1, 2) of every element of a tensor of shape ``shape3`` at batch 3."""
    d, _, inner = (0, 1, 1) if layout is None else layout
    ids = (torch.arange(shape3[d], dtype=torch.int32) // inner) % 3
    view = [1] * len(shape3)
    view[d] = shape3[d]
    return ids.reshape(view).expand(shape3)


def _moved(op: str, attrs: dict, ids: list[torch.Tensor], out3):
    if op == "reshape":
        return ids[0].reshape(out3)
    if op == "permute":
        return ids[0].permute(attrs["dims"])
    if op == "slice":
        return ids[0][attrs["index"]]
    if op == "cat":
        return torch.cat(ids, attrs["dim"])
    parts = ids[0].split(list(attrs["sizes"]), attrs["dim"])
    return tuple(p.squeeze(attrs["dim"]) for p in parts) if attrs["squeeze"] else parts


def _infer(got: torch.Tensor, dims):
    """The layout whose sample ids are ``got`` (``dims`` = ``(dim, size)`` or None), or False."""
    d, size = (0, 1) if dims is None else dims
    if got.numel() == 0:
        return None if dims is None else (d, size, size)
    row = got.movedim(d, 0).reshape(got.shape[d], -1)[:, 0]
    if int(row[0]) != 0:
        return False
    inner = int((row == 0).long().cumprod(0).sum())
    lay = None if dims is None else (d, size, inner)
    if size % inner or not torch.equal(got, sample_ids(tuple(got.shape), lay)):
        return False
    return lay


def follow(op: str, attrs: dict, inputs: list[tuple[tuple, object]], out3, dims):
    """The output layout of shape op ``op``, or False where a row of the output's batch dimension
    would hold several samples (or the samples are out of order).

    ``inputs`` are ``(shape at batch 3, layout)`` of the inputs (all carry the batch); ``out3`` the
    output's shape at batch 3 (a tuple of shapes for split); ``dims`` its ``(dim, size)`` or None."""
    ids = [sample_ids(s, lay) for s, lay in inputs]
    got = _moved(op, attrs, ids, out3)
    if op != "split":
        return _infer(got, dims)
    lays = {_infer(g, dims) for g in got}
    return lays.pop() if len(lays) == 1 else False
