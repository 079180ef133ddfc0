"""Window orders of the convolution's sliding window, and the inputs each step fetches.

The PU keeps a *window register*: the ``Kh x Kw`` inputs under the window, for every
source channel at once. Moving the window keeps the inputs it still covers and fetches
only the ones it newly covers (from the activation or gradient memory):

- a horizontal step by ``s_w`` keeps ``Kh x (Kw - s_w)`` and fetches ``Kh x s_w``;
- a vertical step by ``s_h`` keeps ``(Kh - s_h) x Kw`` and fetches ``s_h x Kw``;
- a step at least as long as the kernel keeps nothing (fetches the whole window).

**raster**: every row is walked left to right; at the end of a row the window jumps back
to column 0 of the next row and reloads the whole ``Kh x Kw`` window (no line buffer).
**snake**: row 0 left to right; at the end of a row the window steps *down* one stride,
keeping ``(Kh - s_h) x Kw`` inputs, and walks the next row in the opposite direction.

Positions are windows of the output grid ``Ho x Wo``; window ``(i, j)`` covers source
rows ``i*s_h .. i*s_h+Kh-1`` and columns ``j*s_w .. j*s_w+Kw-1`` of the *canvas* (the
padded, possibly zero-inserted source). Canvas positions that hold padding or inserted
zeros are **not read**: the register is filled with a generated zero (no access). So a
fetch costs the number of *valid* canvas positions it covers, times the channel count.
Validity is separable, ``valid(r, c) = row_valid[r] and col_valid[c]``, which gives the
closed forms of :func:`walk_reads` (sums over rows and columns, no 2-D walk).
"""

from __future__ import annotations

from typing import Iterator, Sequence

from tinycl.errors import TinyclError

ORDERS = ("raster", "snake")


def check_order(order: str) -> str:
    if order not in ORDERS:
        raise TinyclError(f"unknown window order {order!r}; allowed: {', '.join(ORDERS)}")
    return order


def positions(order: str, ho: int, wo: int) -> Iterator[tuple[int, int]]:
    """Window positions ``(i, j)`` in the order the PU visits them."""
    check_order(order)
    for i in range(ho):
        cols = range(wo) if (order == "raster" or i % 2 == 0) else range(wo - 1, -1, -1)
        for j in cols:
            yield i, j


def moves(order: str, ho: int, wo: int) -> Iterator[tuple[int, int, str]]:
    """``(i, j, move)`` per position; move is ``load`` (whole window), ``right``, ``left`` or ``down``."""
    prev = None
    for i, j in positions(order, ho, wo):
        if prev is None or (order == "raster" and j == 0):
            m = "load"
        elif i != prev[0]:
            m = "down"
        else:
            m = "right" if j > prev[1] else "left"
        yield i, j, m
        prev = (i, j)


def _count(valid: Sequence[bool], lo: int, hi: int) -> int:
    """Valid entries of ``valid[lo:hi]`` (indices past the end count as invalid)."""
    return sum(1 for q in range(max(lo, 0), min(hi, len(valid))) if valid[q])


def _axis_terms(valid: Sequence[bool], n_out: int, k: int, s: int):
    """Per window index along one axis: valid count of the window, and of the part a
    forward (+1) step newly covers, and of the part a backward (-1) step newly covers."""
    full = [_count(valid, t * s, t * s + k) for t in range(n_out)]
    if s >= k:
        fwd = bwd = full
    else:
        fwd = [_count(valid, t * s + k - s, t * s + k) for t in range(n_out)]   # arriving at t from t-1
        bwd = [_count(valid, t * s, t * s + s) for t in range(n_out)]           # arriving at t from t+1
    return full, fwd, bwd


def walk_reads(order: str, row_valid: Sequence[bool], col_valid: Sequence[bool],
               ho: int, wo: int, kh: int, kw: int, sh: int = 1, sw: int = 1) -> int:
    """Closed-form element reads of one channel plane for the whole walk (no 2-D loop).

    ``row_valid`` / ``col_valid``: which canvas rows / columns hold real data.
    raster = sum_i R(i) * (C(0) + sum_{j>0} Cf(j));
    snake  = R(0) C(0) + R(0) sum_{j>0} Cf(j) + sum_{i>0} [Rd(i) C(end_i) + R(i) sum_j' C?(j')],
    where R, C are window counts, Cf / Cb the columns a right / left step newly covers
    and Rd the rows a down step newly covers.
    """
    check_order(order)
    R, Rd, _ = _axis_terms(row_valid, ho, kh, sh)
    C, Cf, Cb = _axis_terms(col_valid, wo, kw, sw)
    right = sum(Cf[1:])
    if order == "raster":
        return sum(R) * (C[0] + right)
    left = sum(Cb[:-1])                    # arriving at j from j+1, j = wo-2 .. 0
    total = R[0] * (C[0] + right)
    for i in range(1, ho):
        end = wo - 1 if i % 2 == 1 else 0  # column where row i-1 ended
        total += Rd[i] * C[end] + R[i] * (left if i % 2 == 1 else right)
    return total


def walk_window_uses(row_valid: Sequence[bool], col_valid: Sequence[bool],
                     ho: int, wo: int, kh: int, kw: int, sh: int = 1, sw: int = 1) -> int:
    """Valid inputs consumed over all windows of one plane (same in both orders).

    Uses minus reads = inputs served from the window register (register reuse).
    """
    R, _, _ = _axis_terms(row_valid, ho, kh, sh)
    C, _, _ = _axis_terms(col_valid, wo, kw, sw)
    return sum(R) * sum(C)


def dense_valid(length: int, pad_before: int, real: int, step: int = 1) -> list[bool]:
    """Validity of a canvas axis: ``real`` samples placed every ``step`` from ``pad_before``."""
    v = [False] * length
    for t in range(real):
        q = pad_before + t * step
        if 0 <= q < length:
            v[q] = True
    return v
