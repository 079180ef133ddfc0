"""Tiling of each primitive step for PULP-like targets (an L1 scratchpad fed by DMA from L2).

A conv-like step produces a tensor of ``C`` channels and ``R`` rows (rows of all samples
stacked). Tiles take ``co`` channels and ``h`` rows; the L1 working set is
``2 * (input + weights + output) + im2col`` bytes (DMA buffers double-buffered, the im2col
buffer single). The weight gradient keeps its dW tile resident and streams the reduction rows.
Elementwise steps and the SGD update stream chunks of half of L1.

A tile's time is ``max(compute, transfer) + tile overhead``; the first tile's transfer is not
hidden. Compute = MACs / (MAC/cycle of the target table) + copied elements / copy rate.
All sizes in bytes, all times in cycles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tinycl.hw.target import BYTES_PER_ELEMENT, Target
from tinycl.hw.workload import LayerWork

MATMUL = ("conv", "pointwise", "depthwise", "linear")


@dataclass
class TilePlan:
    """Result of tiling one step of one layer."""

    tiles: int
    co: int                 # channels per tile (0 for streamed steps)
    rows: int               # rows per tile
    l1_bytes: int           # working set of one tile in L1
    dma_bytes: int          # L2<->L1 traffic of the whole step
    compute_cycles: float
    cycles: float
    fits: bool


def compute_cycles(l: LayerWork, step: str, target: Target, precision: str) -> float:
    """Cycles of the arithmetic and the im2col/transpose copies of one step (no transfers)."""
    macs = l.macs[step]
    if macs == 0:
        return 0.0
    if l.primitive in MATMUL and step != "update":
        eff = target.macs_per_cycle(precision, l.primitive, step)
        b = BYTES_PER_ELEMENT[precision]
        copies = l.scratch_bytes[step] / b
        return macs / eff + copies / target.copy_elements_per_cycle
    return macs / target.elementwise_ops_per_cycle[precision]


def _conv_terms(l: LayerWork, step: str, b: int, n: int):
    """(C, R, fixed(h), per_co(h), weight bytes of all channels) for a conv-like step."""
    ci, hi, wi = (l.in_shape + (1, 1))[:3] if len(l.in_shape) >= 1 else (1, 1, 1)
    co_, ho, wo = (l.out_shape + (1, 1))[:3]
    if l.primitive == "linear":
        ci, hi, wi, co_, ho, wo = l.in_shape[-1], 1, 1, l.out_shape[-1], 1, 1
        n = n * int(math.prod(l.in_shape[:-1]))
    g = l.geom
    kh, kw, s = g.get("kh", 1), g.get("kw", 1), g.get("stride", 1)
    groups = g.get("groups", 1)
    dw = l.primitive == "depthwise"
    col = l.primitive == "conv"
    kk = kh * kw
    if step == "forward":
        C, R = co_, n * ho
        def fixed(h):
            rows_in = min(hi, (h - 1) * s + kh) if h <= ho else h * hi // ho
            inp = 0 if dw else rows_in * wi * ci * b
            im2 = h * wo * kk * (ci // groups) * b if col else 0
            return 2 * inp + im2
        def per_co(h):
            rows_in = min(hi, (h - 1) * s + kh) if h <= ho else h * hi // ho
            inp = rows_in * wi * b if dw else 0
            return 2 * (inp + kk * (1 if dw else ci // groups) * b + h * wo * b)
        return C, R, fixed, per_co
    if step == "backward_input":
        C, R = ci, n * hi
        def fixed(h):
            rows_dy = min(ho, math.ceil(h / s) + kh - 1) if h <= hi else h * ho // hi
            dy = 0 if dw else rows_dy * wo * co_ * b
            im2 = h * wi * kk * (co_ // groups) * b if col else 0
            return 2 * dy + im2
        def per_co(h):
            rows_dy = min(ho, math.ceil(h / s) + kh - 1) if h <= hi else h * ho // hi
            dy = rows_dy * wo * b if dw else 0
            return 2 * (dy + kk * (1 if dw else co_ // groups) * b + h * wi * b)
        return C, R, fixed, per_co
    # backward_weight: dW tile resident (co rows), stream h rows of dY and X
    C, R = co_, n * ho
    def fixed(h):
        rows_in = min(hi, (h - 1) * s + kh) if h <= ho else h * hi // ho
        x = 0 if dw else rows_in * wi * ci * b
        im2 = h * wo * kk * (ci // groups) * b if col else 0
        return 2 * x + im2
    def per_co(h):
        rows_in = min(hi, (h - 1) * s + kh) if h <= ho else h * hi // ho
        x = rows_in * wi * b if dw else 0
        return 2 * (x + h * wo * b) + kk * (1 if dw else ci // groups) * b
    return C, R, fixed, per_co


def _row_candidates(R: int) -> list[int]:
    return sorted({math.ceil(R / k) for k in range(1, R + 1)} if R <= 512 else
                  {math.ceil(R / k) for k in range(1, 513)} | {max(1, R // k) for k in range(1, 64)})


def tile_step(l: LayerWork, step: str, target: Target, precision: str, batch: int) -> TilePlan:
    """Best tiling (fewest cycles) of one step of ``l`` on a tiled target."""
    l1 = target.memory[0].size_bytes
    bw = target.memory[1].bandwidth_bytes_per_cycle or 1.0
    b = BYTES_PER_ELEMENT[precision]
    comp = compute_cycles(l, step, target, precision)
    traffic = l.bytes_read[step] + l.bytes_written[step]
    if comp == 0 and traffic == 0:
        return TilePlan(0, 0, 0, 0, 0, 0.0, 0.0, True)
    ov = target.tile_overhead_cycles
    if l.primitive not in MATMUL or step == "update":
        chunk = max(1, l1 // 2)
        tiles = max(1, math.ceil(2 * traffic / l1))
        t = traffic / tiles / bw
        c = comp / tiles
        cyc = t + tiles * (max(c, t) + ov) + target.layer_overhead_cycles
        return TilePlan(tiles, 0, 0, min(l1, 2 * traffic), traffic, comp, cyc, True)
    C, R, fixed, per_co = _conv_terms(l, step, b, batch)
    best = None
    for h in _row_candidates(R):
        room = l1 - fixed(h)
        co = min(C, int(room // per_co(h))) if room > 0 else 0
        if co < 1:
            continue
        n_co, n_h = math.ceil(C / co), math.ceil(R / h)
        tiles = n_co * n_h
        # inputs are re-read once per channel tile, weights once per row tile
        w_bytes = l.params * b
        a_bytes = l.bytes_read[step] - (w_bytes if step != "backward_weight" else 0)
        dma = a_bytes * n_co + (w_bytes * n_h if step != "backward_weight" else 0) + l.bytes_written[step]
        t, c = dma / tiles / bw, comp / tiles
        cyc = t + tiles * (max(c, t) + ov) + target.layer_overhead_cycles
        ws = fixed(h) + co * per_co(h)
        if best is None or cyc < best.cycles:
            best = TilePlan(tiles, co, h, int(ws), int(dma), comp, cyc, True)
    if best is None:   # even one row of one channel overflows L1
        ws = fixed(1) + per_co(1)
        tiles = C * R
        cyc = traffic / bw + tiles * (max(comp / tiles, traffic / tiles / bw) + ov) + target.layer_overhead_cycles
        best = TilePlan(tiles, 1, 1, int(ws), traffic, comp, cyc, False)
    return best
