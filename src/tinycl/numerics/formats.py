"""Floating-point formats and rounding: IEEE round-to-nearest-even and stochastic rounding.

Emulation keeps every tensor in float32 (or float64 in tests) holding values that are
exactly representable in the target format, so fast float32 kernels can run on them.
Why that is faithful: a product of two FP16 (11-bit significand) or BF16 (8-bit)
numbers is exact in float32 (24 bits), and for one +, -, x a float32 result rounded
again to FP16/BF16 equals the correctly rounded result, because 24 >= 2p + 2 for both
(double rounding is innocuous; Figueroa 1995). A float32-accumulated dot product
rounded once at the end is therefore exactly "FP16 in, FP32 accumulate, FP16 out".
"""

from __future__ import annotations

import torch

from ..errors import TinyclError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}
# significand bits including the hidden one, and the largest finite value
SIGNIFICAND_BITS = {"fp32": 24, "fp16": 11, "bf16": 8}
MAX_FINITE = {"fp32": torch.finfo(torch.float32).max, "fp16": 65504.0, "bf16": torch.finfo(torch.bfloat16).max}


# Formats beyond IEEE floats (e.g. 8-bit block formats) register their rounding here:
# name -> (round_fn(x) -> x, stochastic_fn(x, generator) -> x, bytes per element).
CUSTOM: dict[str, tuple] = {}


def register_format(name: str, round_fn, stochastic_fn, nbytes: float) -> None:
    """Add a number format usable in precision policies (emulated in float tensors)."""
    CUSTOM[name] = (round_fn, stochastic_fn, nbytes)
    BYTES[name] = nbytes


def check_format(fmt: str) -> str:
    """Return ``fmt`` if it is a known float format, else raise a one-line error."""
    if fmt not in DTYPES and fmt not in CUSTOM:
        raise TinyclError(f"unknown number format {fmt!r}; allowed: {', '.join([*DTYPES, *CUSTOM])}")
    return fmt


def unit_roundoff(fmt: str) -> float:
    """``u = 2**-p``: the largest relative error of one round-to-nearest in ``fmt``."""
    return 2.0 ** -SIGNIFICAND_BITS[check_format(fmt)]


def round_to(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """Round ``x`` to the nearest ``fmt`` value (ties to even), keeping ``x.dtype``.

    Overflow gives +-inf as in IEEE arithmetic; callers that scale losses check for it.
    """
    if fmt in CUSTOM:
        return CUSTOM[fmt][0](x)
    dtype = DTYPES[check_format(fmt)]
    if x.dtype == dtype or (fmt == "fp32" and x.dtype == torch.float32):
        return x
    if fmt == "fp32" and x.dtype == torch.float64:
        return x.to(torch.float32).to(torch.float64)
    if x.dtype == torch.float64:  # torch converts float64 -> half via float32: two roundings
        return _to_float32_odd(x).to(dtype).to(x.dtype)
    return x.to(dtype).to(x.dtype)


def _to_float32_odd(x: torch.Tensor) -> torch.Tensor:
    """float64 -> float32 with round-to-odd: exact values stay, inexact ones go to the
    neighbour toward zero with the last bit set. A later round-to-nearest-even to any format
    of at most 22 significand bits (FP16: 11, BF16: 8) is then the correctly rounded result
    (Boldo & Melquiond 2008), which a plain float64 -> float32 -> FP16 chain is not."""
    x32 = x.to(torch.float32)
    back = x32.to(torch.float64)
    inexact = (back != x) & torch.isfinite(x32)
    toward_zero = torch.where(back.abs() > x.abs(), torch.nextafter(x32, torch.zeros_like(x32)), x32)
    odd = (toward_zero.view(torch.int32) | 1).view(torch.float32)
    return torch.where(inexact, odd, x32)


def stochastic_round(x: torch.Tensor, fmt: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Round ``x`` to one of its two neighbours in ``fmt``, up with probability
    ``(x - down) / (up - down)``: unbiased, ``E[stochastic_round(x)] == x``.

    Values already representable are returned unchanged; overflow rounds to +-inf.
    """
    if fmt in CUSTOM:
        return CUSTOM[fmt][1](x, generator)
    dtype = DTYPES[check_format(fmt)]
    if fmt == "fp32" and x.dtype == torch.float32:
        return x
    near = x.to(dtype)
    near_x = near.to(x.dtype)
    above = near_x > x
    toward = torch.where(above, torch.full_like(near, -float("inf")), torch.full_like(near, float("inf")))
    other = torch.nextafter(near, toward).to(x.dtype)
    down = torch.where(above, other, near_x)
    up = torch.where(above, near_x, other)
    gap = up - down
    frac = torch.where(gap > 0, (x - down) / gap, torch.zeros_like(x))
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    out = torch.where(u < frac, up, down)
    exact = near_x == x
    return torch.where(exact | ~torch.isfinite(x), near_x, out)
