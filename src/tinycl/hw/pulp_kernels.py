"""Shape-aware compute cycles of PULP-TrainLib-like kernels (matmul and depthwise), in cycles.

Every conv-like training step is a matmul ``C[N x M] = A[N x K] . B[K x M]`` (PULP-TrainLib):

===============  ==========================  ==========================  ======================
step             N (rows of C)               M (cols of C)               K (reduction)
===============  ==========================  ==========================  ======================
forward          Cout                        pixels (n*Ho*Wo)            kh*kw*Cin/groups
backward_input   Cin                         input pixels (n*Hi*Wi)      kh*kw*Cout/groups
backward_weight  Cout                        kh*kw*Cin/groups            pixels (n*Ho*Wo)
===============  ==========================  ==========================  ======================

(pointwise and linear: kh = kw = 1; linear pixels = rows). The input gradient is the dense
im2col of dY over the input pixels, as PULP-TrainLib computes it: a strided conv pays ~s^2 times
its useful MACs there. On a tiled target N and M are those of one tile.

Matmul on ``cores`` cores (:class:`GemmKernel`, per core, cycles):

- the rows of C are split over the cores (``ceil(N / cores)`` each), or the columns
  (``ceil(M / cores)``), whichever is faster (the autotuner's choice); the slowest core counts;
- a core computes its ``r x c`` outputs in register blocks of ``ur x uc``; each full block costs
  ``block_cycles + floor(K / simd) * k_step_cycles + (K mod simd) * ur * uc * leftover_mac_cycles``;
- leftover outputs (``r*c - full_blocks*ur*uc``, rows or columns that do not fill a block) run a
  scalar 1x1 loop: ``leftover_output_cycles + K * leftover_mac_cycles`` each.

So the asymptotic rate is ``cores * ur * uc * simd / k_step_cycles`` MAC/cycle (the kernel peak)
and small N, M or K lose to block set-up, load imbalance and leftovers.

Depthwise (:class:`DwKernel`): channels split over cores, ``ceil(C / cores)`` per core; per
channel ``macs * mac_cycles + outputs * pixel_cycles`` where outputs are the elements the step
writes (forward: output pixels, input gradient: input pixels, weight gradient: kh*kw taps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class GemmKernel:
    """Register-blocked matmul of one precision; cycles per core."""

    unroll_rows: int
    unroll_cols: int
    simd: int                       # MACs per lane-instruction along K (2 for packed halves)
    k_step_cycles: float            # one K step of a full ur x uc block
    block_cycles: float             # set-up and store of one block
    leftover_mac_cycles: float      # one MAC of the scalar leftover loop
    leftover_output_cycles: float   # set-up and store of one leftover output

    def peak(self, cores: int) -> float:
        """Asymptotic MAC/cycle of ``cores`` cores."""
        return cores * self.unroll_rows * self.unroll_cols * self.simd / self.k_step_cycles


@dataclass(frozen=True)
class DwKernel:
    """Depthwise kernel of one precision; cycles per core."""

    mac_cycles: float
    pixel_cycles: float


def core_cycles(rows: int, cols: int, k: int, kern: GemmKernel) -> float:
    """Cycles of one core computing ``rows x cols`` outputs with reduction ``k``."""
    if rows <= 0 or cols <= 0 or k <= 0:
        return 0.0
    ur, uc, v = kern.unroll_rows, kern.unroll_cols, kern.simd
    full = (rows // ur) * (cols // uc)
    left = rows * cols - full * ur * uc
    per_block = kern.block_cycles + (k // v) * kern.k_step_cycles + (k % v) * ur * uc * kern.leftover_mac_cycles
    per_left = kern.leftover_output_cycles + k * kern.leftover_mac_cycles
    return full * per_block + left * per_left


def gemm_cycles(n: int, m: int, k: int, kern: GemmKernel, cores: int) -> float:
    """Cycles of ``C[n x m] = A[n x k] B[k x m]`` on ``cores`` cores (rows or columns split)."""
    if n <= 0 or m <= 0 or k <= 0:
        return 0.0
    by_rows = core_cycles(math.ceil(n / cores), m, k, kern)
    by_cols = core_cycles(n, math.ceil(m / cores), k, kern)
    return min(by_rows, by_cols)


def dw_cycles(channels: int, macs: int, outputs: int, kern: DwKernel, cores: int) -> float:
    """Cycles of a depthwise step: ``macs`` and ``outputs`` summed over all ``channels``."""
    if channels <= 0 or macs <= 0:
        return 0.0
    per_ch = (macs * kern.mac_cycles + outputs * kern.pixel_cycles) / channels
    return math.ceil(channels / cores) * per_ch


def gemm_dims(step: str, c_tile: int, px_tile: int, taps: int, red_fwd: int, red_bwd: int) -> tuple:
    """(N, M, K) of one tile of a conv-like step (see the module table).

    ``c_tile``: channels the tile produces (Cout for forward / weight gradient, Cin for the input
    gradient); ``px_tile``: pixels of the tile (output pixels, or input pixels for the input
    gradient); ``red_fwd`` = Cin/groups, ``red_bwd`` = Cout/groups.
    """
    if step == "forward":
        return c_tile, px_tile, taps * red_fwd
    if step == "backward_input":
        return c_tile, px_tile, taps * red_bwd
    return c_tile, taps * red_fwd, px_tile     # backward_weight: reduction over the pixels


def split_sizes(total: int, tile: int) -> list[tuple[int, int]]:
    """[(size, count)] of cutting ``total`` into tiles of ``tile`` (a last partial one)."""
    tile = max(1, min(tile, total))
    full, rest = divmod(total, tile)
    out = [(tile, full)] if full else []
    if rest:
        out.append((rest, 1))
    return out
