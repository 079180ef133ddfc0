"""Integer kernels for the graph ops of an INT8 front beyond conv / linear / add / pools.

- :func:`lut_int8`: any elementwise function of one INT8 tensor (hardswish, sigmoid, SiLU,
  scalar add / mul...) as a 256-entry table of output codes, built once by :func:`make_lut`
  from the input and output quantization (the device runs one load per element).
- :func:`mul_int8`: ``a * b`` of two INT8 tensors (squeeze-excitation gating), the product of
  the zero-point-corrected codes (|.| <= 255^2, an int32) requantized with one fixed-point multiplier.
- :func:`rescale_int8`: codes moved to another (scale, zero point), for ``cat`` of tensors with
  different quantization.
"""

from __future__ import annotations

from typing import Callable

import torch

from tinycl.numerics.quant import INT8_MAX, INT8_MIN, quantize, requantize_


def make_lut(fn: Callable[[torch.Tensor], torch.Tensor], in_scale: float, in_zp: int, out_scale: float,
             out_zp: int, qmin: int = INT8_MIN, qmax: int = INT8_MAX) -> torch.Tensor:
    """INT8 table ``T[q + 128] = quantize(fn(in_scale * (q - in_zp)))`` for every code q (float64 fn)."""
    codes = torch.arange(INT8_MIN, INT8_MAX + 1, dtype=torch.float64)
    y = fn(in_scale * (codes - in_zp))
    return quantize(y, out_scale, out_zp, qmin, qmax).to(torch.int8)


def lut_int8(q: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Apply a 256-entry INT8 table to INT8 codes."""
    return table[q.to(torch.int64) - INT8_MIN]


def mul_int8(a: torch.Tensor, a_zp: int, b: torch.Tensor, b_zp: int, multiplier: int, shift: int, out_zp: int,
             qmin: int = INT8_MIN, qmax: int = INT8_MAX) -> torch.Tensor:
    """Quantized ``a * b`` (broadcasting): ``requantize((a - a_zp) * (b - b_zp), M, shift) + out_zp``.

    ``(M, shift)`` encode ``a_scale * b_scale / out_scale`` (:func:`tinycl.numerics.quant.quantize_multiplier`).
    """
    acc = (a.to(torch.int64) - a_zp) * (b.to(torch.int64) - b_zp)
    return requantize_(acc, multiplier, shift, out_zp, qmin, qmax)


def rescale_int8(q: torch.Tensor, in_zp: int, multiplier: int, shift: int, out_zp: int) -> torch.Tensor:
    """Codes of the same reals at another quantization: ``requantize(q - in_zp, M, shift) + out_zp``."""
    return requantize_(q.to(torch.int64) - in_zp, multiplier, shift, out_zp)
