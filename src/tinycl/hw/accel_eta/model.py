"""Cycle model of ETA's PE array for one training step (forward, input gradient, weight gradient,
normalisation and weight update), with stride-aware input gradients.

Mapping (a hierarchical array of ``clusters`` clusters of ``rows x cols`` PEs, each PE one MAC
per cycle; the PE is reconfigured per step so that the same array runs all three):

=================  =====================  =====================  ==========================
step               rows (reduction tile)  cols                   clusters
=================  =====================  =====================  ==========================
forward            input channels         output channels        output pixels (N*Ho*Wo)
input gradient     output channels        input channels         dY pixels (N*Ho*Wo)
weight gradient    dY pixels (N*Ho*Wo)    output channels        input channels x taps
=================  =====================  =====================  ==========================

with the ``kh*kw`` taps run in sequence for forward and input gradient, and groups in sequence.
So ``compute cycles = prod(ceil(dim / tile))`` of the three mapped dimensions times the rest.

Stride-aware input gradient: each dY pixel is scattered through the kh*kw taps to the dX pixel it
touches (the reconfigurable PE's mode), so no zero of a zero-inserted dY is ever read. A dense
array instead convolves the zero-inserted, padded dY: its cluster dimension becomes the N*H*W
input pixels and its MACs ``conv2d_backward_input_dense_macs``; the difference is reported as
``macs_saved_strided`` and ``cycles_saved_strided``.

Each layer step takes ``max(compute, NoC bytes / NoC bandwidth, DRAM bytes / DRAM bandwidth)``
(double-buffered) plus ``layer_overhead_cycles``. NoC bytes: the streamed operand is re-sent once
per tile of the mapped output dimension, the stationary one once per cluster pass. DRAM bytes: every
int8 operand and result of the step once (activations are not kept on chip between layers).

The unified core (``lanes`` 8-bit lanes) runs, time-multiplexed and after the array, the
normalisation (RangeNorm ops: 6, 4, 2 per element for forward, input and weight gradient),
activations, pooling and residual adds (1 op per element per step) and the SGD update (2 ops per
parameter; DRAM: FP32 master read + write, int8 gradient read, int8 weight write). Norm and
elementwise layers work on tensors the array has just produced or will consume: their DRAM bytes are
reported (input and output, forward and backward) but add no cycles. A BatchNorm2d in the traced
model stands for ETA's normalisation and is costed with RangeNorm's operation counts.

Throughput: ``gops = 2 * (useful conv/linear MACs of the three steps) / step time``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from torch import nn

from tinycl.errors import TinyclError
from tinycl.hw.workload import build_workload
from tinycl.kernels.macs import conv2d_backward_input_dense_macs, conv2d_macs
from tinycl.kernels.rangenorm import rangenorm_ops

from .config import ArrayConfig

STEPS = ("forward", "backward_input", "backward_weight")
_MAC_PRIMS = ("conv", "pointwise", "depthwise", "linear")


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class ConvShape:
    """One conv (a linear layer is a 1x1 conv on a 1x1 map). Sizes per step: ``n`` samples."""

    n: int
    cin: int
    cout: int
    hin: int
    win: int
    kh: int = 1
    kw: int = 1
    stride: int = 1
    padding: int = 0
    groups: int = 1

    @property
    def out_hw(self) -> tuple[int, int]:
        ho = (self.hin + 2 * self.padding - self.kh) // self.stride + 1
        wo = (self.win + 2 * self.padding - self.kw) // self.stride + 1
        return ho, wo


def step_compute_cycles(s: ConvShape, cfg: ArrayConfig, step: str, stride_aware: bool = True) -> int:
    """Array cycles of one step of one conv (see the mapping table in the module docstring)."""
    ho, wo = s.out_hw
    g, cg, mg = s.groups, s.cin // s.groups, s.cout // s.groups
    taps = s.kh * s.kw
    if step == "forward":
        c = cdiv(cg, cfg.rows) * cdiv(mg, cfg.cols) * cdiv(s.n * ho * wo, cfg.clusters) * taps
    elif step == "backward_input":
        pixels = s.n * ho * wo if stride_aware else s.n * s.hin * s.win
        c = cdiv(mg, cfg.rows) * cdiv(cg, cfg.cols) * cdiv(pixels, cfg.clusters) * taps
    elif step == "backward_weight":
        c = cdiv(s.n * ho * wo, cfg.rows) * cdiv(mg, cfg.cols) * cdiv(cg * taps, cfg.clusters)
    else:
        raise TinyclError(f"unknown step {step!r}; allowed: {', '.join(STEPS)}")
    return g * cdiv(c, cfg.macs_per_pe)


def step_bytes(s: ConvShape, step: str, cfg: ArrayConfig) -> tuple[int, int]:
    """``(noc_bytes, dram_bytes)`` of one step, int8 operands (1 byte each)."""
    ho, wo = s.out_hw
    x, y = s.n * s.cin * s.hin * s.win, s.n * s.cout * ho * wo
    w = s.cout * (s.cin // s.groups) * s.kh * s.kw
    mg, cg = s.cout // s.groups, s.cin // s.groups
    if step == "forward":      # x streamed per cout tile, w per pixel pass
        noc = x * cdiv(mg, cfg.cols) + w * cdiv(s.n * ho * wo, cfg.clusters * cfg.resend_pixels) + y
        dram = x + w + y
    elif step == "backward_input":
        noc = y * cdiv(cg, cfg.cols) + w * cdiv(s.n * ho * wo, cfg.clusters * cfg.resend_pixels) + x
        dram = y + w + x
    else:                      # dY and x streamed, dW accumulated in the PEs
        noc = y * cdiv(cg * s.kh * s.kw, cfg.clusters) + x * cdiv(mg, cfg.cols) + w
        dram = y + x + w
    return noc, dram


@dataclass
class LayerStep:
    """One layer's work on the array or the unified core; cycles, MACs and bytes per training step."""

    name: str
    kind: str
    macs: dict
    cycles: dict
    bytes_dram: int
    macs_saved_strided: int = 0
    cycles_saved_strided: int = 0


def conv_layer_step(name: str, s: ConvShape, cfg: ArrayConfig, need_input_grad: bool = True) -> LayerStep:
    """Cycles of the three steps of one conv, with the stride-aware input gradient."""
    m = conv2d_macs(s.n, s.cin, s.cout, s.hin, s.win, s.kh, s.kw, s.stride, s.padding, s.groups)
    macs, cycles, dram_total = {}, {}, 0
    for step in STEPS:
        if step == "backward_input" and not need_input_grad:
            macs[step] = cycles[step] = 0
            continue
        comp = step_compute_cycles(s, cfg, step)
        noc, dram = step_bytes(s, step, cfg)
        cycles[step] = int(math.ceil(max(comp, noc / cfg.noc_bytes_per_cycle, dram / cfg.dram_bytes_per_cycle)
                                     + cfg.layer_overhead_cycles))
        macs[step] = m[step]
        dram_total += dram
    saved_m = saved_c = 0
    if need_input_grad and s.stride > 1:
        dense = conv2d_backward_input_dense_macs(s.n, s.cin, s.cout, s.hin, s.win, s.kh, s.kw, s.stride,
                                                 s.padding, s.groups)
        saved_m = dense - m["backward_input"]
        saved_c = step_compute_cycles(s, cfg, "backward_input", False) - step_compute_cycles(s, cfg, "backward_input")
    return LayerStep(name, "conv", macs, cycles, dram_total, saved_m, saved_c)


def core_step(name: str, kind: str, elems: int, channels: int, params: int, cfg: ArrayConfig) -> LayerStep:
    """A layer on the unified core: normalisation, activation/pool/add (elementwise)."""
    if kind == "norm":
        ops = rangenorm_ops(elems, channels)
        ops = {k: ops[k] for k in STEPS}
    else:
        ops = {"forward": elems, "backward_input": elems, "backward_weight": 0}
    cycles = {k: cdiv(v, cfg.core_lanes) for k, v in ops.items()}
    return LayerStep(name, kind, dict.fromkeys(STEPS, 0), cycles, 4 * elems)


def update_step(params: int, cfg: ArrayConfig) -> LayerStep:
    """SGD on the unified core: 2 ops per parameter, DRAM-bound by the FP32 master copy."""
    dram = params * (2 * cfg.master_bytes_per_param + 2)
    c = int(math.ceil(max(params * 2 / cfg.core_lanes, dram / cfg.dram_bytes_per_cycle)))
    return LayerStep("update", "update", dict.fromkeys(STEPS, 0), {"update": c}, dram)


def _conv_shape(l, n: int) -> ConvShape:
    g = l.geom
    if l.primitive == "linear":
        rows = math.prod(l.in_shape[:-1]) if len(l.in_shape) > 1 else 1
        return ConvShape(n * rows, g["cin"], g["cout"], 1, 1)
    return ConvShape(n, g["cin"], g["cout"], l.in_shape[1], l.in_shape[2], g["kh"], g["kw"], g["stride"],
                     0, g["groups"])


def layer_steps(w, pads: dict, cfg: ArrayConfig) -> list[LayerStep]:
    """The array and unified-core steps of a built workload: adaptive layers run the three steps on
    ``w.step_batch`` samples, frozen layers the forward on one sample; the SGD update of the
    adaptive parameters comes last (row ``update``). ``pads``: conv name -> padding."""
    rows = []
    for l in w.layers:
        n = 1 if l.frozen else w.step_batch
        if l.primitive in _MAC_PRIMS:
            s = _conv_shape(l, n)
            if l.primitive != "linear":
                s.padding = pads.get(l.name, 0)
            r = conv_layer_step(l.name, s, cfg, need_input_grad=l.macs["backward_input"] > 0)
        elif l.primitive == "batchnorm" and l.macs["forward"]:
            r = core_step(l.name, "norm", n * math.prod(l.out_shape), l.out_shape[0], l.params, cfg)
        elif l.primitive in ("activation", "maxpool", "avgpool", "add"):
            r = core_step(l.name, "elementwise", n * math.prod(l.out_shape), 0, 0, cfg)
        else:
            continue
        if l.frozen:
            r.cycles = {"forward": r.cycles["forward"]}
            r.macs = {k: (v if k == "forward" else 0) for k, v in r.macs.items()}
            r.macs_saved_strided = r.cycles_saved_strided = 0
        rows.append(r)
    rows.append(update_step(sum(l.params for l in w.adaptive), cfg))
    return rows


def eta_training_step(model: nn.Module, input_shape, cfg: ArrayConfig, batch: int | None = None) -> dict:
    """Cycles, latency (seconds) and GOPS of one training step of ``batch`` samples on the array
    (default: the batch of the array file, ``training.batch``).

    Returns ``{"layers": [...], "cycles", "latency_s", "gops", "macs", "macs_saved_strided",
    "cycles_saved_strided", "array_cycles", "core_cycles", "peak_gops", ...}``.
    """
    batch = cfg.batch if batch is None else batch
    if batch < 1:
        raise TinyclError(f"batch must be >= 1, got {batch}")
    w = build_workload(model, tuple(input_shape), None, "int8", batch=batch)
    from tinycl.hw.mappings import conv_paddings
    rows = layer_steps(w, conv_paddings(w), cfg)
    array_cycles = sum(sum(r.cycles.values()) for r in rows if r.kind == "conv")
    core_cycles = sum(sum(r.cycles.values()) for r in rows if r.kind != "conv")
    cycles = array_cycles + core_cycles
    macs = sum(sum(r.macs.values()) for r in rows)
    latency = cycles / cfg.clock_hz
    return {
        "batch": batch, "array": cfg.name, "pes": cfg.pes, "clock_hz": cfg.clock_hz, "peak_gops": cfg.peak_gops,
        "macs": macs, "cycles": cycles, "array_cycles": array_cycles, "core_cycles": core_cycles,
        "latency_s": latency, "gops": 2 * macs / latency / 1e9,
        "utilisation": macs / (cycles * cfg.pes * cfg.macs_per_pe),
        "macs_saved_strided": sum(r.macs_saved_strided for r in rows),
        "cycles_saved_strided": sum(r.cycles_saved_strided for r in rows),
        "layers": [asdict(r) for r in rows],
    }
