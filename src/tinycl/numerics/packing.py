"""Dense N-bit packing of unsigned integer codes into bytes (N = 1..8).

Layout: one little-endian bitstream. Code ``i`` occupies stream bits
``[i*bits, (i+1)*bits)``, its least significant bit first, and stream bit ``k`` is
bit ``k % 8`` of byte ``k // 8``. The last byte is zero-padded, so ``count`` codes
take exactly ``ceil(count * bits / 8)`` bytes: seven 7-bit codes fill 49 bits and take
7 bytes, i.e. 7/8 of a byte per code.

:func:`pack_rows` / :func:`unpack_rows` pack each row of a 2-D code tensor as its own
stream that starts on a byte boundary (``ceil(row_len * bits / 8)`` bytes per row),
which lets a replay memory overwrite one sample without touching its neighbours.

Everything is vectorised: groups of 8 codes (``bits`` bytes) are combined into one
int64 word, so there is no Python loop over codes.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from tinycl.errors import TinyclError

_BYTE_SHIFTS = torch.arange(0, 64, 8, dtype=torch.int64)  # 0, 8, ..., 56


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes that ``count`` codes of ``bits`` bits take in one dense stream."""
    _check_bits(bits)
    if int(count) < 0:
        raise TinyclError(f"packing: count must be >= 0, got {count}")
    return (int(count) * bits + 7) // 8


def pack(codes, bits: int) -> torch.Tensor:
    """Pack integer codes in ``[0, 2**bits)`` into a dense little-endian uint8 stream.

    ``codes`` may have any shape (it is flattened in C order) and any integer dtype
    (torch tensor or numpy array). Returns a 1-D uint8 tensor of
    ``packed_nbytes(codes.numel(), bits)`` bytes.
    """
    _check_bits(bits)
    flat = _as_int_tensor(codes).reshape(-1)
    _check_range(flat, bits)
    count = flat.numel()
    nbytes = packed_nbytes(count, bits)
    if count == 0:
        return torch.zeros(0, dtype=torch.uint8)
    if bits == 8:
        return flat.to(torch.uint8)
    if 8 % bits == 0:  # 1, 2, 4 bits: whole codes per byte, stay in uint8
        per = 8 // bits
        pad = (-count) % per
        c = flat.to(torch.uint8)
        if pad:
            c = torch.cat([c, c.new_zeros(pad)])
        c = c.view(-1, per)
        out = c[:, 0].clone()
        for j in range(1, per):
            out |= c[:, j] << (j * bits)
        return out
    # General case: 8 codes -> one int64 word of 8*bits bits -> `bits` bytes.
    pad = (-count) % 8
    c = flat.to(torch.int64)
    if pad:
        c = torch.cat([c, c.new_zeros(pad)])
    c = c.view(-1, 8)
    word = c[:, 0].clone()
    for j in range(1, 8):
        word |= c[:, j] << (j * bits)
    out = ((word.unsqueeze(1) >> _BYTE_SHIFTS[:bits]) & 0xFF).to(torch.uint8)
    return out.reshape(-1)[:nbytes]


def unpack(packed, bits: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack`: read ``count`` codes from a uint8 stream, as int64 (1-D).

    ``packed`` must hold at least ``packed_nbytes(count, bits)`` bytes; extra bytes are
    ignored.
    """
    _check_bits(bits)
    count = int(count)
    need = packed_nbytes(count, bits)
    p = _as_uint8_tensor(packed).reshape(-1)
    if p.numel() < need:
        raise TinyclError(
            f"unpack: {count} codes of {bits} bits need {need} bytes, got {p.numel()}")
    p = p[:need]
    if count == 0:
        return torch.zeros(0, dtype=torch.int64)
    if bits == 8:
        return p.to(torch.int64)
    mask = (1 << bits) - 1
    if 8 % bits == 0:
        shifts = torch.arange(0, 8, bits, dtype=torch.uint8)
        c = (p.unsqueeze(1) >> shifts) & mask
        return c.reshape(-1)[:count].to(torch.int64)
    groups = math.ceil(count / 8)
    full = groups * bits
    if full > need:
        p = torch.cat([p, p.new_zeros(full - need)])
    b = p.view(groups, bits).to(torch.int64)
    word = b[:, 0].clone()
    for k in range(1, bits):
        word |= b[:, k] << (8 * k)
    shifts = torch.arange(0, 8 * bits, bits, dtype=torch.int64)
    c = (word.unsqueeze(1) >> shifts) & mask
    return c.reshape(-1)[:count]


def row_nbytes(row_len: int, bits: int) -> int:
    """Bytes per row in :func:`pack_rows` (``ceil(row_len * bits / 8)``)."""
    return packed_nbytes(row_len, bits)


def pack_rows(codes, bits: int) -> torch.Tensor:
    """Pack each row of an ``(n, row_len)`` code tensor as its own byte-aligned stream.

    Returns uint8 ``(n, ceil(row_len * bits / 8))``; row ``r`` equals
    ``pack(codes[r], bits)``.
    """
    c = _as_int_tensor(codes)
    if c.dim() != 2:
        raise TinyclError(f"pack_rows: codes must be 2-D (n, row_len), got shape {tuple(c.shape)}")
    n, row_len = c.shape
    nb = packed_nbytes(row_len, bits)
    per = 8 // math.gcd(8, bits)  # codes per whole-byte group
    pad = (-row_len) % per
    if pad:
        c = torch.cat([c, c.new_zeros(n, pad)], dim=1)
    if n == 0 or row_len == 0:
        return torch.zeros(n, nb, dtype=torch.uint8)
    # Each padded row fills whole bytes, so the joint stream splits at row borders.
    out = pack(c, bits).view(n, -1)
    return out[:, :nb].contiguous()


def unpack_rows(packed, bits: int, row_len: int) -> torch.Tensor:
    """Inverse of :func:`pack_rows`: uint8 ``(n, nbytes)`` -> int64 ``(n, row_len)``."""
    p = _as_uint8_tensor(packed)
    if p.dim() != 2:
        raise TinyclError(f"unpack_rows: packed must be 2-D (n, nbytes), got shape {tuple(p.shape)}")
    n = p.shape[0]
    nb = packed_nbytes(row_len, bits)
    if p.shape[1] < nb:
        raise TinyclError(
            f"unpack_rows: rows of {row_len} codes at {bits} bits need {nb} bytes, got {p.shape[1]}")
    per = 8 // math.gcd(8, bits)
    padded_len = row_len + (-row_len) % per
    padded_nb = padded_len * bits // 8
    p = p[:, :nb]
    if padded_nb > nb:
        p = torch.cat([p, p.new_zeros(n, padded_nb - nb)], dim=1)
    if n == 0 or row_len == 0:
        return torch.zeros(n, row_len, dtype=torch.int64)
    c = unpack(p.reshape(-1), bits, n * padded_len).view(n, padded_len)
    return c[:, :row_len]


# ----------------------------------------------------------------------------- checks

def _check_bits(bits) -> None:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise TinyclError(f"packing: bits must be an integer in 1..8, got {bits!r}")


def _as_int_tensor(codes) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(codes)) if isinstance(codes, np.ndarray) else codes
    if not isinstance(t, torch.Tensor):
        raise TinyclError(f"packing: codes must be a torch tensor or numpy array, got {type(codes).__name__}")
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TinyclError(f"packing: codes must have an integer dtype, got {t.dtype}")
    return t.contiguous()


def _as_uint8_tensor(packed) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(packed)) if isinstance(packed, np.ndarray) else packed
    if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8:
        raise TinyclError("unpack: packed data must be a uint8 tensor or array")
    return t.contiguous()


def _check_range(flat: torch.Tensor, bits: int) -> None:
    if flat.numel() == 0:
        return
    lo, hi = int(flat.min()), int(flat.max())
    if lo < 0 or hi >= (1 << bits):
        raise TinyclError(f"pack: codes must lie in [0, {(1 << bits) - 1}] for {bits} bits, got [{lo}, {hi}]")
