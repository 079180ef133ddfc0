"""``int8bfp``: 8-bit integers sharing one power-of-two scale per tensor, and the ``int8`` policy.

The format (ETA-style compact 8-bit training data; the paper's exact format is not public,
so this is tinycl's own design, in the lineage of tensor-wise scaled 8-bit training):

* A tensor ``x`` is stored as ``q * 2**e``: ``q`` are int8 values in ``[-127, 127]``
  (symmetric, -128 unused) and ``e`` is one shared int8 exponent per tensor.
  Storage: 1 byte per element plus 1 byte per tensor.
* ``e`` is the smallest integer with ``max|x| <= 127 * 2**e`` (no clipping ever happens).
  With ``max|x| = m * 2**E``, ``m`` in ``[0.5, 1)`` (``frexp``): ``e = E - 7`` if
  ``m <= 127/128``, else ``E - 6``. Computed exactly, no division or ``log2``.
* Forward values (weights, activations) round to nearest, ties to even (``torch.round``).
* Gradients round stochastically: ``q = floor(x / 2**e + u)``, ``u ~ U[0, 1)``, unbiased.
* A tensor of zeros stays zeros; a tensor with a NaN or inf is returned as it is (not
  representable; the training loop sees it).

One tensor is one batch: at batch 1 the activation scale is per sample; at batch B the
B samples share it (what one DMA'd tile of a streaming accelerator shares).

The ``int8`` policy: weights, activations and gradients in ``int8bfp``; gradients rounded
stochastically; the SGD update applied to an FP32 master copy of the weights (the cost:
4 extra bytes per parameter, read and written once per step; the int8 copy is re-derived
after each update). Accumulation has int32 semantics:

* every product of two ``int8bfp`` operands is ``qa * qb * 2**(ea + eb)`` with
  ``|qa * qb| <= 127**2 = 16129``: all terms of one dot product sit on the same grid
  ``2**(ea + eb)``, because each operand tensor has a single scale;
* so a dot product of length K is exact in a float format with p significand bits while
  ``K * 16129 < 2**p``: float32 (p = 24) guarantees it for ``K <= 1040``, float64
  (p = 53) for any K below int32 overflow (``K * 16129 < 2**31``: ``K <= 133143``).
* The engine computes in the tensors' dtype. Run the network in float64 (a float64 torch
  module) for emulation that is bit-exact with int32 accumulation (tested against a
  scalar integer reference); float32 runs (the fast path used for accuracy runs) are exact
  for reductions up to K = 1040 and otherwise differ from int32 only by float32 rounding
  of partial sums (relative error below ``K * 2**-24``) before the 8-bit output rounding.

Importing this module registers the format and the policy.
"""

from __future__ import annotations

import torch

from .formats import register_format
from .precision import Precision, register_precision

NAME = "int8bfp"
QMAX = 127
BYTES_PER_ELEMENT = 1


def shared_exponent(x: torch.Tensor) -> int | None:
    """The tensor's exponent ``e`` (``max|x| <= 127 * 2**e``, smallest such), or None if all zero."""
    amax = x.detach().abs().max() if x.numel() else x.new_zeros(())
    if not torch.isfinite(amax) or amax == 0:
        return None
    m, ex = torch.frexp(amax.to(torch.float64))
    e = int(ex) - 7
    return e if float(m) <= QMAX / 128 else e + 1


def _scale(x: torch.Tensor) -> torch.Tensor:
    """``2**e`` as a 0-d tensor of x's dtype (branch-free, no host sync); 1 for an all-zero x.

    Same rule as :func:`shared_exponent`; a NaN/inf anywhere makes it non-finite.
    """
    amax = x.detach().abs().amax() if x.numel() else x.new_zeros(())
    m, ex = torch.frexp(amax.to(torch.float64))
    e = ex - 7 + (m > QMAX / 128).to(ex.dtype)
    e = torch.where(amax == 0, torch.zeros_like(e), e)
    return torch.where(torch.isfinite(amax), torch.ldexp(amax.new_ones((), dtype=torch.float64), e),
                       amax.to(torch.float64)).to(x.dtype)


def _finish(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``clamp(q) * scale``, or x itself where the tensor holds a NaN/inf (not representable)."""
    out = q.clamp_(-QMAX, QMAX) * scale
    return torch.where(torch.isfinite(scale), out, x)


def round_int8bfp(x: torch.Tensor) -> torch.Tensor:
    """Round ``x`` to ``int8bfp`` (nearest, ties to even), keeping ``x.dtype``."""
    scale = _scale(x)
    return _finish(x, torch.round(x / scale), scale)


def stochastic_int8bfp(x: torch.Tensor, generator: torch.Generator | None = None,
                       u: torch.Tensor | None = None) -> torch.Tensor:
    """Round ``x`` to ``int8bfp`` stochastically: ``floor(x / 2**e + u)``, ``u ~ U[0, 1)``.

    ``u`` may be given (same shape as x) to make the draw reproducible in tests.
    """
    scale = _scale(x)
    if u is None:
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return _finish(x, torch.floor(x / scale + u), scale)


def to_int8(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Split an ``int8bfp``-valued tensor into ``(q as torch.int8, e)`` (the stored form)."""
    e = shared_exponent(x)
    if e is None:
        return torch.zeros(x.shape, dtype=torch.int8), 0
    q = x.to(torch.float64) * 2.0 ** -e
    if not torch.equal(q, torch.round(q)) or q.abs().max() > QMAX:
        raise ValueError("tensor does not hold int8bfp values")
    return q.to(torch.int8), e


register_format(NAME, round_int8bfp, stochastic_int8bfp, BYTES_PER_ELEMENT)

INT8 = Precision("int8", weights=NAME, activations=NAME, gradients=NAME, accumulate="fp32",
                 master_weights=True, stochastic=True, loss_scale=None,
                 extra={"accumulator": "int32 semantics (exact in float64; float32 exact for K <= 1040)",
                        "scale": "one power-of-two exponent per tensor"})
register_precision(INT8)
