"""Matrix products with the accumulation semantics of a device.

``matmul(a, b)`` is the fast path (float32/float64 accumulation by BLAS).
``matmul_native(a, b, fmt)`` emulates a chain of fused multiply-adds in which every
partial sum is rounded to ``fmt`` (one rounding per MAC), in order k = 0..K-1:

    acc = round_fmt(acc + a[m, k] * b[k, n])

It runs in float64: the product of two FP16/BF16 values is exact there, and the sum
with an FP16/BF16 accumulator is exact unless the two differ by more than 2**31 in
magnitude, in which case the smaller one is far below half an ULP of the result in
``fmt`` and both the exact and the computed sum round to the same value. So the result
is the correctly rounded FMA chain, bit for bit. Cost: a Python loop over K.
"""

from __future__ import annotations

import torch

from ..numerics.formats import round_to


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` with batch broadcasting; accumulation in the tensors' own dtype."""
    return torch.matmul(a, b)


def matmul_native(a: torch.Tensor, b: torch.Tensor, fmt: str) -> torch.Tensor:
    """``a @ b`` (shapes ``(..., M, K) @ (..., K, N)``) with every partial sum rounded to ``fmt``.

    Inputs should already hold ``fmt`` values. Returns ``a.dtype``.
    """
    a64 = round_to(a.to(torch.float64), fmt)
    b64 = round_to(b.to(torch.float64), fmt)
    shape = torch.broadcast_shapes(a64.shape[:-2], b64.shape[:-2]) + (a64.shape[-2], b64.shape[-1])
    acc = torch.zeros(shape, dtype=torch.float64, device=a.device)
    for k in range(a64.shape[-1]):
        acc = round_to(acc + a64[..., :, k:k + 1] * b64[..., k:k + 1, :], fmt)
    return acc.to(a.dtype)
