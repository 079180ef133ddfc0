"""The cost of a learning event as one pipeline of named stages, the same for every device:

1. ``workload``: what the event computes (:func:`tinycl.hw.workload.build_workload`);
2. ``mapping``: how the device runs each layer step, in cycles per repetition, with the bytes it
   moves per memory level (and, for a model with per-access energies, its dynamic energy).
   Interchangeable mappings (:mod:`tinycl.hw.mappings`): ``flat`` (rate table), ``tiled`` (PULP
   kernels over L1 tiles), ``eta-array`` (the ETA PE array), ``tinycl-pu`` (the TinyCL window PU);
   a target names its own (``kind``, or ``accelerator``), so each device has exactly one model;
3. ``cycles``: repetitions x cycles per layer, plus the per-step overhead (``overheads.step_cycles``);
4. ``energy``: per access where the device gives per-access energies (MACs x pJ/MAC + bytes x pJ/byte
   of their level, or the accelerator's own counts) plus idle power x time; else active power x time;
5. ``memory``: the placement and peak bytes per level (:func:`tinycl.hw.memory.plan_memory`).

Cycles are of ``target.clock_hz``; seconds, joules and bytes throughout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from tinycl.errors import TinyclError
from tinycl.hw.memory import OPTIMIZER_STATE, plan_memory
from tinycl.hw.target import Target
from tinycl.hw.workload import STEP_NAMES, Workload, build_workload

STAGES = ("workload", "mapping", "cycles", "energy", "memory")


@dataclass
class LayerCost:
    """What a mapping says about one layer (or one extra pass: loss, update, control, replay).

    ``step_cycles``: cycles of one repetition of each step; ``reps``: repetitions per event;
    ``bytes_by_level``: bytes moved per event per memory level; ``dynamic_j``: the mapping's own
    per-access energy per event (joules), or None when the energy stage applies the target's."""

    name: str
    type: str
    primitive: str
    frozen: bool
    macs: dict
    step_cycles: dict
    reps: int
    bytes_by_level: dict = field(default_factory=dict)
    dynamic_j: float | None = None

    @property
    def cycles(self) -> float:
        return sum(self.step_cycles.values()) * self.reps


@dataclass
class Mapped:
    """The mapping stage's result: per-layer costs and what the memory stage needs (L1 tile peak)."""

    mapping: str
    layers: list[LayerCost]
    l1_peak: int = 0
    notes: list = field(default_factory=list)


def stage_workload(model: nn.Module, input_shape, precision: str = "fp32", latent_layer: str | None = None,
                   batch: int = 1, n_replays: int = 0, lr_bits: int = 8, step_batch: int | None = None) -> Workload:
    """Stage 1: the work of one learning event (MACs, bytes, tensors per layer and step)."""
    return build_workload(model, input_shape, latent_layer, precision, batch, n_replays, lr_bits, step_batch)


def stage_mapping(w: Workload, target: Target, model: nn.Module | None = None, optimizer: str = "sgd",
                  overrides: dict | None = None) -> Mapped:
    """Stage 2: the target's one mapping (flat, tiled, eta-array or tinycl-pu)."""
    from tinycl.hw.mappings import mapping_for
    return mapping_for(target, overrides).map(w, target, model, optimizer)


def stage_cycles(w: Workload, target: Target, m: Mapped) -> dict:
    """Stage 3: cycles per event: sum of repetitions x step cycles, plus the per-step overhead."""
    layer_cycles = sum(c.cycles for c in m.layers)
    step_ov = target.step_overhead_cycles * w.steps
    total = layer_cycles + step_ov
    return {"cycles": total, "layer_cycles": layer_cycles, "step_overhead_cycles": step_ov,
            "latency_s": total / target.clock_hz}


def cost_energy_j(c: LayerCost, target: Target, precision: str, latency_s: float) -> float:
    """Energy (J) of one layer cost: the mapping's own per-access energy, or the target's per-MAC and
    per-byte energies, plus idle power x time; active power x time where neither is given."""
    if c.dynamic_j is not None:
        return c.dynamic_j + target.idle_power_w * latency_s
    prec = precision if precision in target.energy_pj_per_mac else None
    if prec is None:
        return target.active_power_w * latency_s
    pj = sum(c.macs.values()) * c.reps * target.energy_pj_per_mac[prec]
    for level, nbytes in c.bytes_by_level.items():
        pj += nbytes * (target.level(level).energy_pj_per_byte or 0.0)
    return pj * 1e-12 + target.idle_power_w * latency_s


def stage_energy(w: Workload, target: Target, m: Mapped, cyc: dict) -> dict:
    """Stage 4: energy per layer cost and in total (joules); the per-step overhead at active power."""
    hz = target.clock_hz
    per = []
    for c in m.layers:
        prec = "int8" if c.frozen and "int8" in target.precisions else w.precision
        per.append(cost_energy_j(c, target, prec, c.cycles / hz))
    ov = target.active_power_w * cyc["step_overhead_cycles"] / hz
    mem = sum(sum(c.bytes_by_level.values()) for c in m.layers)
    return {"per_layer": per, "energy_j": sum(per) + ov, "step_overhead_j": ov, "bytes_moved": mem}


def stage_memory(w: Workload, target: Target, m: Mapped, optimizer: str = "sgd"):
    """Stage 5: placement of the tensor groups and peak bytes per level."""
    return plan_memory(w, target, optimizer, l1_peak=m.l1_peak)


def run(w: Workload, target: Target, model: nn.Module | None = None, optimizer: str = "sgd",
        overrides: dict | None = None) -> dict:
    """All stages on a built workload; the dict :func:`tinycl.hw.cost.profile` returns."""
    if w.precision not in target.precisions:
        raise TinyclError(f"target {target.name!r} does not support precision {w.precision!r} "
                          f"(supported: {', '.join(target.precisions)})")
    if optimizer not in OPTIMIZER_STATE:
        raise TinyclError(f"unknown optimizer {optimizer!r}; choose {', '.join(OPTIMIZER_STATE)}")
    m = stage_mapping(w, target, model, optimizer, overrides)
    cyc = stage_cycles(w, target, m)
    en = stage_energy(w, target, m, cyc)
    plan = stage_memory(w, target, m, optimizer)
    hz = target.clock_hz
    rows, replay = [], None
    tot_macs = dict.fromkeys(STEP_NAMES, 0)
    for c, e in zip(m.layers, en["per_layer"]):
        d = {"name": c.name, "type": c.type, "primitive": c.primitive, "frozen": c.frozen, "macs": dict(c.macs),
             "step_cycles": dict(c.step_cycles), "reps": c.reps, "cycles": c.cycles, "latency_s": c.cycles / hz,
             "energy_j": e, "bytes_by_level": dict(c.bytes_by_level)}
        if c.primitive == "replay":
            from tinycl.hw.mappings import replay_traffic
            rt = replay_traffic(w)
            replay = dict(d, bytes_read=rt["read"], bytes_written=rt["written"],
                          level=plan.placement.get("replay_memory"))
            continue
        rows.append(d)
        for s in STEP_NAMES:
            tot_macs[s] += c.macs.get(s, 0)
    tot = {"cycles": cyc["cycles"], "latency_s": cyc["latency_s"], "energy_j": en["energy_j"],
           "step_overhead_cycles": cyc["step_overhead_cycles"], "bytes_moved": en["bytes_moved"],
           "macs": tot_macs, "peak_memory_bytes": plan.peak_bytes, "capacity_bytes": plan.capacity,
           "fits": plan.fits}
    return {"target": target.name, "mapping": m.mapping, "stages": list(STAGES), "precision": w.precision,
            "batch": w.batch, "step_batch": w.step_batch, "n_replays": w.n_replays, "lr_bits": w.lr_bits,
            "latent_layer": w.latent_layer, "steps": w.steps, "clock_hz": hz, "layers": rows,
            "replay": replay, "total": tot,
            "memory": {"groups": plan.groups, "placement": plan.placement, "notes": plan.notes + m.notes}}
