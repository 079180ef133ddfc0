"""Latency, energy and memory of a learning event on a target: the per-layer profile.

Per layer and step: a tiled target uses ``tiling.tile_step``; a flat target takes
``max(compute, bytes / bandwidth of the level holding the working set) + layer overhead``.
A tiled target whose working set spilled to an outer level (e.g. L3) is also bound by that
level's bandwidth for the step's bytes. Frozen layers run an INT8 forward per new sample (``batch`` times);
adaptive layers run ``steps`` training steps. Cycles are of ``target.clock_hz``.
"""

from __future__ import annotations

import math

from torch import nn

from tinycl.errors import TinyclError
from tinycl.hw.energy import step_energy_j
from tinycl.hw.memory import OPTIMIZER_STATE, plan_memory
from tinycl.hw.target import Target, load_target
from tinycl.hw.tiling import compute_cycles, tile_step
from tinycl.hw.workload import STEP_NAMES, LayerWork, Workload, build_workload

TRAIN_STEPS = ("forward", "backward_input", "backward_weight", "update")


def _bw(target: Target, level: str | None) -> float | None:
    if level is None or level == "none":
        return None
    return target.level(level).bandwidth_bytes_per_cycle


def _step_cycles(l: LayerWork, step: str, target: Target, prec: str, batch: int, home: str | None) -> tuple:
    """(cycles, L1 tile bytes) of one step."""
    if l.macs[step] == 0 and l.bytes_read[step] == 0:
        return 0.0, 0
    traffic = l.bytes_read[step] + l.bytes_written[step]
    if target.kind == "tiled":
        tp = tile_step(l, step, target, prec, batch)
        cyc = tp.cycles
        inner = target.memory[1].name
        if home not in (None, "none", inner):
            bw = _bw(target, home)
            if bw:
                cyc = max(cyc, traffic / bw)
        return cyc, tp.l1_bytes
    comp = compute_cycles(l, step, target, prec, batch)
    bw = _bw(target, home)
    mem = traffic / bw if bw else 0.0
    return max(comp, mem) + target.layer_overhead_cycles, 0


def profile_workload(w: Workload, target: Target, optimizer: str = "sgd") -> dict:
    """Profile a built workload on a loaded target (see :func:`profile`)."""
    if w.precision not in target.precisions:
        raise TinyclError(f"target {target.name!r} does not support precision {w.precision!r} "
                          f"(supported: {', '.join(target.precisions)})")
    if optimizer not in OPTIMIZER_STATE:
        raise TinyclError(f"unknown optimizer {optimizer!r}; choose {', '.join(OPTIMIZER_STATE)}")
    hz = target.clock_hz
    # first pass: placement without tiles, to know where the working set lives
    plan = plan_memory(w, target, optimizer)
    home = plan.placement.get("working_set")
    rows, l1_peak = [], 0
    tot = {"cycles": 0.0, "latency_s": 0.0, "energy_j": 0.0}
    tot_macs = dict.fromkeys(STEP_NAMES, 0)
    for l in w.layers:
        prec = "int8" if l.frozen else w.precision
        if l.frozen and "int8" not in target.precisions:
            prec = w.precision
        reps = w.batch if l.frozen else w.steps
        cyc, by_step = 0.0, {}
        for s in TRAIN_STEPS:
            c, l1b = _step_cycles(l, s, target, prec, 1 if l.frozen else w.step_batch, home)
            by_step[s] = c
            cyc += c * reps
            l1_peak = max(l1_peak, l1b)
        macs_event = sum(l.macs.values()) * reps
        lat = cyc / hz
        e = step_energy_j(target, prec, lat, macs_event)
        rows.append({"name": l.name, "type": l.type, "primitive": l.primitive, "frozen": l.frozen,
                     "macs": dict(l.macs), "step_cycles": by_step, "cycles": cyc, "latency_s": lat, "energy_j": e})
        for s in STEP_NAMES:
            tot_macs[s] += l.macs[s]
        tot["cycles"] += cyc
    # replay memory: read every stored latent, write the new ones, dequantise all into the step
    rt = w.replay_traffic_bytes()
    rep_level = plan.placement.get("replay_memory")
    rep_bw = _bw(target, rep_level) or _bw(target, home)
    ops = (w.n_replays + w.batch) * w.latent_elements if w.latent_layer is not None else 0
    rep_comp = ops / target.elementwise_ops_per_cycle.get("int8", target.elementwise_ops_per_cycle[w.precision])
    rep_mem = (rt["read"] + rt["written"]) / rep_bw if rep_bw else 0.0
    rep_cyc = max(rep_comp, rep_mem)
    tot["cycles"] += rep_cyc
    replay = {"bytes_read": rt["read"], "bytes_written": rt["written"], "level": rep_level,
              "cycles": rep_cyc, "latency_s": rep_cyc / hz,
              "energy_j": step_energy_j(target, w.precision, rep_cyc / hz)}
    if target.kind == "tiled":
        plan = plan_memory(w, target, optimizer, l1_peak=l1_peak)
    tot["latency_s"] = tot["cycles"] / hz
    tot["energy_j"] = sum(r["energy_j"] for r in rows) + replay["energy_j"]
    tot["macs"] = tot_macs
    tot["peak_memory_bytes"] = plan.peak_bytes
    tot["capacity_bytes"] = plan.capacity
    tot["fits"] = plan.fits
    return {"target": target.name, "precision": w.precision, "batch": w.batch, "step_batch": w.step_batch,
            "n_replays": w.n_replays,
            "lr_bits": w.lr_bits, "latent_layer": w.latent_layer, "steps": w.steps, "clock_hz": hz,
            "layers": rows, "replay": replay, "total": tot,
            "memory": {"groups": plan.groups, "placement": plan.placement, "notes": plan.notes}}


def profile(model: nn.Module, input_shape, target: str | Target, precision: str = "fp32",
            latent_layer: str | None = None, batch: int = 1, n_replays: int = 0, lr_bits: int = 8,
            optimizer: str = "sgd", step_batch: int | None = None) -> dict:
    """Per-layer and total MACs, cycles, latency (s), energy (J) and peak memory (bytes per level)
    of one learning event of ``model`` on ``target``. Layer ``macs`` and ``step_cycles`` are per
    step; ``cycles``, ``latency_s`` and ``energy_j`` are per learning event."""
    t = target if isinstance(target, Target) else load_target(target)
    w = build_workload(model, input_shape, latent_layer, precision, batch, n_replays, lr_bits, step_batch)
    return profile_workload(w, t, optimizer)


def learning_event_cost(model: nn.Module, input_shape, latent_layer: str | None, target, precision: str,
                        batch: int, n_replays: int, lr_bits: int) -> dict:
    """What ``tinycl run`` reports: latency_s, energy_j, peak_memory_bytes (per level), fits."""
    p = profile(model, input_shape, target, precision, latent_layer, batch, n_replays, lr_bits)
    t = p["total"]
    return {"latency_s": t["latency_s"], "energy_j": t["energy_j"],
            "peak_memory_bytes": dict(t["peak_memory_bytes"]), "fits": t["fits"],
            "target": p["target"], "precision": precision}


MAC_PRIMITIVES = ("conv", "pointwise", "depthwise", "linear")


def mac_per_cycle(p: dict, trained_only: bool = True) -> float:
    """Aggregate MAC/cycle of a profile: the MACs of conv and linear layers (forward, input and
    weight gradient; BN, activation and pooling operations are not MACs) over all cycles."""
    macs = sum(sum(r["macs"][s] for s in ("forward", "backward_input", "backward_weight"))
               * (p["steps"] if not r["frozen"] else p["batch"]) for r in p["layers"]
               if r["primitive"] in MAC_PRIMITIVES and not (trained_only and r["frozen"]))
    return macs / p["total"]["cycles"] if p["total"]["cycles"] else math.nan
