"""Binary elementwise ops with broadcasting: add, sub, mul, div; forward and input gradients.

Either operand may be a tensor or a Python number (a constant: its gradient is ``None``).
Each backward returns ``(da, db)`` already summed back to each operand's own shape
(:func:`unbroadcast`), so a residual add or a squeeze-excitation gate ``x * s`` with
``s`` of shape ``N x C x 1 x 1`` gets gradients of the right shapes.
Op counts: :func:`tinycl.kernels.macs.binary_ops`.
"""

from __future__ import annotations

import torch

from ..errors import TinyclError

__all__ = ["unbroadcast", "broadcast_shape", "add_forward", "add_backward", "sub_forward", "sub_backward",
           "mul_forward", "mul_backward", "div_forward", "div_backward"]


def _is_tensor(v) -> bool:
    return isinstance(v, torch.Tensor)


def broadcast_shape(a, b) -> tuple[int, ...]:
    """Shape of ``a op b`` (a number has shape ``()``); a mismatch is a :class:`TinyclError`."""
    sa = tuple(a.shape) if _is_tensor(a) else ()
    sb = tuple(b.shape) if _is_tensor(b) else ()
    try:
        return tuple(torch.broadcast_shapes(sa, sb))
    except RuntimeError:
        raise TinyclError(f"shapes {list(sa)} and {list(sb)} do not broadcast") from None


def unbroadcast(g: torch.Tensor, shape) -> torch.Tensor:
    """Sum the gradient ``g`` of a broadcast result back to an operand of shape ``shape``.

    Sums the leading dimensions ``shape`` lacks and, keeping them, the dimensions where
    ``shape`` has size 1. Returns ``g`` itself when the shapes already match.
    """
    gs = g.shape
    if gs == shape:
        return g
    lead = len(gs) - len(shape)
    dims = list(range(lead)) + [lead + i for i, s in enumerate(shape) if s == 1 and gs[lead + i] != 1]
    out = g.sum(dims, keepdim=True) if dims else g
    return out if lead == 0 else out.reshape(shape)


def _grad(g, operand):
    """``g`` reduced to ``operand``'s shape (``operand``: a tensor or its ``torch.Size``), or None
    for a number."""
    if isinstance(operand, torch.Size):
        return unbroadcast(g, operand)
    return unbroadcast(g, operand.shape) if _is_tensor(operand) else None


def _apply(op, a, b) -> torch.Tensor:
    """``op(a, b)``; a shape mismatch or two numbers is a :class:`TinyclError` (checked only on failure,
    so the common case costs one library call)."""
    if not (_is_tensor(a) or _is_tensor(b)):
        raise TinyclError("an elementwise op needs at least one tensor operand")
    try:
        return op(a, b)
    except RuntimeError:
        broadcast_shape(a, b)  # raises the one-line error for a mismatch
        raise


def add_forward(a, b) -> torch.Tensor:
    """``y = a + b`` (broadcasting)."""
    return _apply(torch.add, a, b)


def add_backward(dy: torch.Tensor, a, b):
    """``(da, db) = (dy, dy)``, each reduced to its operand's shape (None for a number). Only the
    operands' shapes are read: ``a`` and ``b`` may be given as ``torch.Size``."""
    return _grad(dy, a), _grad(dy, b)


def sub_forward(a, b) -> torch.Tensor:
    """``y = a - b`` (broadcasting)."""
    return _apply(torch.sub, a, b)


def sub_backward(dy: torch.Tensor, a, b):
    """``(da, db) = (dy, -dy)``, reduced to the operands' shapes (which may be given as ``torch.Size``)."""
    gb = _grad(dy, b)
    return _grad(dy, a), (None if gb is None else gb.neg())


def mul_forward(a, b) -> torch.Tensor:
    """``y = a * b`` (broadcasting)."""
    return _apply(torch.mul, a, b)


def mul_backward(dy: torch.Tensor, a, b):
    """``(da, db) = (dy * b, dy * a)``, reduced to the operands' shapes."""
    da = _grad(dy * b, a) if _is_tensor(a) else None
    db = _grad(dy * a, b) if _is_tensor(b) else None
    return da, db


def div_forward(a, b) -> torch.Tensor:
    """``y = a / b`` (true division, broadcasting)."""
    return _apply(torch.div, a, b)


def div_backward(dy: torch.Tensor, a, b, y: torch.Tensor | None = None):
    """``(da, db) = (dy / b, -dy * a / b**2)``, reduced to the operands' shapes.

    ``y`` (the forward output) saves a division: ``db = -(dy * y) / b``.
    """
    da = _grad(dy / b, a) if _is_tensor(a) else None
    db = None
    if _is_tensor(b):
        q = (a / b) if y is None else y
        db = _grad((dy * q).div_(b).neg_(), b)
    return da, db
