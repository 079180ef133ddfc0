"""Tiling of each primitive step for PULP-like targets (an L1 scratchpad fed by DMA from L2).

A conv-like step produces a tensor of ``C`` channels and ``P`` pixels (all samples stacked).
Tiles take ``co`` channels and ``px`` pixels: whole output rows, or part of one row when a
row's im2col does not fit; the L1 working set is
``2 * (input + weights + output) + im2col`` bytes (DMA buffers double-buffered, the im2col
buffer single). The weight gradient keeps its dW tile resident and streams the reduction rows.
Elementwise steps and the SGD update stream chunks of half of L1.

A tile's time is ``max(compute, transfer) + tile overhead``; the first tile's transfer is not
hidden. Compute = :func:`compute_cycles` of the tile's shape (the shape-aware kernel model
of ``pulp_kernels`` where the target gives one, else MACs / table MAC/cycle) + copied
elements / copy rate.
All sizes in bytes, all times in cycles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tinycl.hw.pulp_kernels import dw_cycles, gemm_cycles, gemm_dims, split_sizes
from tinycl.hw.target import BYTES_PER_ELEMENT, Target
from tinycl.hw.workload import LayerWork

MATMUL = ("conv", "pointwise", "depthwise", "linear")


@dataclass
class TilePlan:
    """Result of tiling one step of one layer."""

    tiles: int
    co: int                 # channels per tile (0 for streamed steps)
    rows: int               # output pixels per tile
    l1_bytes: int           # working set of one tile in L1
    dma_bytes: int          # L2<->L1 traffic of the whole step
    compute_cycles: float
    cycles: float
    fits: bool


def step_dims(l: LayerWork, step: str, n: int) -> tuple:
    """(C, P, taps, Cin/groups, Cout/groups) of a conv-like step on ``n`` samples.

    C: channels the step produces (Cin for the input gradient, else Cout); P: the pixels it
    runs over (input pixels for the input gradient, else output pixels; rows for a linear).
    """
    if l.primitive == "linear":
        rows = n * int(math.prod(l.in_shape[:-1]))
        ci, co = l.in_shape[-1], l.out_shape[-1]
        return (ci if step == "backward_input" else co), rows, 1, ci, co
    ci, hi, wi = (tuple(l.in_shape) + (1, 1))[:3]
    co, ho, wo = (tuple(l.out_shape) + (1, 1))[:3]
    g = l.geom.get("groups", 1)
    taps = l.geom.get("kh", 1) * l.geom.get("kw", 1)
    if step == "backward_input":
        return ci, n * hi * wi, taps, ci // g, co // g
    return co, n * ho * wo, taps, ci // g, co // g


def compute_cycles(l: LayerWork, step: str, target: Target, precision: str, batch: int = 1,
                   co: int | None = None, px: int | None = None) -> float:
    """Cycles of the arithmetic and the im2col/transpose copies of one step (no transfers).

    ``batch``: samples in the step; ``co`` x ``px``: the tile (channels x pixels, see
    :func:`step_dims`; default the whole step). A target with a ``gemm`` (``depthwise_kernel``)
    entry for ``precision`` uses the shape-aware model of :mod:`tinycl.hw.pulp_kernels` over the
    tiles; otherwise MACs / (MAC/cycle of the efficiency table).
    """
    macs = l.macs[step]
    if macs == 0:
        return 0.0
    if l.primitive not in MATMUL or step == "update":
        return macs / target.elementwise_ops_per_cycle[precision]
    b = BYTES_PER_ELEMENT[precision]
    copies = l.scratch_bytes[step] / b / target.copy_elements_per_cycle
    gk = target.gemm.get(precision)
    dk = target.dw_kernel.get(precision)
    if l.primitive == "depthwise" and dk is not None:
        C, P, taps, _, _ = step_dims(l, step, batch)
        cyc = 0.0
        for cs, cn in split_sizes(C, co or C):
            for ps, pn in split_sizes(P, px or P):
                part = macs * cs * ps / (C * P)
                outs = cs * (taps if step == "backward_weight" else ps)
                cyc += cn * pn * dw_cycles(cs, part, outs, dk, target.cores)
        return cyc + copies
    if l.primitive != "depthwise" and gk is not None:
        C, P, taps, rf, rb = step_dims(l, step, batch)
        cyc = 0.0
        for cs, cn in split_sizes(C, co or C):
            for ps, pn in split_sizes(P, px or P):
                cyc += cn * pn * gemm_cycles(*gemm_dims(step, cs, ps, taps, rf, rb), gk, target.cores)
        return cyc + copies
    eff = target.macs_per_cycle(precision, l.primitive, step)
    return macs / eff + copies


def _in_extent(px: int, w_out: int, h_in: int, w_in: int, k_h: int, k_w: int, s: int) -> int:
    """Input pixels a tile of ``px`` output pixels reads (whole rows, or part of one row)."""
    if px >= w_out:
        rows = math.ceil(px / w_out)
        return min(h_in, (rows - 1) * s + k_h) * w_in
    return k_h * min(w_in, (px - 1) * s + k_w)


def _conv_terms(l: LayerWork, step: str, b: int, n: int):
    """(C, P, fixed(px), per_co(px)) of a conv-like step tiled over C channels and P output pixels.

    A tile holds ``co`` channels and ``px`` output pixels (whole rows, or part of one row when a
    single row's im2col does not fit); its L1 bytes are ``fixed(px) + co * per_co(px)``.
    """
    ci, hi, wi = (tuple(l.in_shape) + (1, 1))[:3]
    co_, ho, wo = (tuple(l.out_shape) + (1, 1))[:3]
    if l.primitive == "linear":
        ci, hi, wi, co_, ho, wo = l.in_shape[-1], 1, 1, l.out_shape[-1], 1, 1
        n = n * int(math.prod(l.in_shape[:-1]))
    g = l.geom
    kh, kw, s = g.get("kh", 1), g.get("kw", 1), g.get("stride", 1)
    cg = ci // g.get("groups", 1)
    dw = l.primitive == "depthwise"
    col = l.primitive == "conv"
    kk = kh * kw
    if step == "backward_input":   # produces dX (ci channels) from dY (co_ channels)
        C, P = ci, n * hi * wi
        red = co_ // g.get("groups", 1)
        def src(px):
            return _in_extent(max(1, px // (s * s)), wi, ho, wo, kh, kw, 1)
        def fixed(px):
            return (0 if dw else 2 * src(px) * co_ * b) + (px * kk * red * b if col else 0)
        def per_co(px):
            return 2 * ((src(px) * b if dw else 0) + kk * (1 if dw else red) * b + px * b) \
                + (px * kk * b if dw else 0)     # depthwise im2row rows of this channel
        return C, P, fixed, per_co
    C, P = co_, n * ho * wo
    def src(px):
        return _in_extent(px, wo, hi, wi, kh, kw, s)
    def fixed(px):
        return (0 if dw else 2 * src(px) * ci * b) + (px * kk * cg * b if col else 0)
    if step == "forward":
        def per_co(px):
            return 2 * ((src(px) * b if dw else 0) + kk * (1 if dw else cg) * b + px * b) + (px * kk * b if dw else 0)
    else:                          # backward_weight: dW tile resident, dY and X streamed
        def per_co(px):
            return 2 * ((src(px) * b if dw else 0) + px * b) + kk * (1 if dw else cg) * b + (px * kk * b if dw else 0)
    return C, P, fixed, per_co


def _px_candidates(P: int, w_row: int) -> list[int]:
    """Tile sizes in output pixels: whole-row multiples and fractions of one row."""
    rows = max(1, P // max(1, w_row))
    cands = {math.ceil(rows / k) * w_row for k in range(1, min(rows, 512) + 1)}
    cands |= {math.ceil(w_row / k) for k in range(1, w_row + 1)}
    return sorted(c for c in cands if 1 <= c <= P) or [1]


def tile_step(l: LayerWork, step: str, target: Target, precision: str, batch: int) -> TilePlan:
    """Best tiling (fewest cycles) of one step of ``l`` on a tiled target."""
    l1 = target.memory[0].size_bytes
    bw = target.memory[1].bandwidth_bytes_per_cycle or 1.0
    b = BYTES_PER_ELEMENT[precision]
    comp = compute_cycles(l, step, target, precision, batch)
    traffic = l.bytes_read[step] + l.bytes_written[step]
    if comp == 0 and traffic == 0:
        return TilePlan(0, 0, 0, 0, 0, 0.0, 0.0, True)
    ov = target.tile_overhead_cycles
    if l.primitive not in MATMUL or step == "update":
        tiles = max(1, math.ceil(2 * traffic / l1))
        t = traffic / tiles / bw
        c = comp / tiles
        cyc = t + tiles * (max(c, t) + ov) + target.layer_overhead_cycles
        return TilePlan(tiles, 0, 0, min(l1, 2 * traffic), traffic, comp, cyc, True)
    C, R, fixed, per_co = _conv_terms(l, step, b, batch)
    w_row = (tuple(l.in_shape if step == "backward_input" else l.out_shape) + (1, 1))[2] \
        if l.primitive != "linear" else 1
    best = None
    for h in _px_candidates(R, w_row):
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
        comp = compute_cycles(l, step, target, precision, batch, co, h)
        t, c = dma / tiles / bw, comp / tiles
        cyc = t + tiles * (max(c, t) + ov) + target.layer_overhead_cycles
        ws = fixed(h) + co * per_co(h)
        if best is None or cyc < best.cycles:
            best = TilePlan(tiles, co, h, int(ws), int(dma), comp, cyc, True)
    if best is None:   # even one row of one channel overflows L1
        ws = fixed(1) + per_co(1)
        tiles = C * R
        comp = compute_cycles(l, step, target, precision, batch, 1, 1)
        cyc = traffic / bw + tiles * (max(comp / tiles, traffic / tiles / bw) + ov) + target.layer_overhead_cycles
        best = TilePlan(tiles, 1, 1, int(ws), traffic, comp, cyc, False)
    return best
