"""The mapping stage of the cost pipeline: how a device runs each layer step of a workload.

Four interchangeable mappings, each returning :class:`tinycl.hw.pipeline.Mapped`:

- ``flat``: a rate table; a step takes ``max(compute, bytes / bandwidth of the level holding the
  working set) + layer overhead`` (MCUs, GPUs);
- ``tiled``: PULP-TrainLib kernels over L1 tiles fed by DMA (:mod:`tinycl.hw.tiling`);
- ``eta-array``: the ETA PE-array model (:mod:`tinycl.hw.accel_eta.model`);
- ``tinycl-pu``: the TinyCL window processing unit (:mod:`tinycl.hw.accel_tinycl`), batch 1.

A target uses ``accelerator`` when it names one, else its ``kind``. All bytes of a layer are
attributed to the level holding the working set (flat, tiled), the DDR (ETA) or the PU SRAMs.
"""

from __future__ import annotations

import math

from tinycl.errors import TinyclError
from tinycl.hw.memory import plan_memory
from tinycl.hw.pipeline import LayerCost, Mapped
from tinycl.hw.target import Target
from tinycl.hw.tiling import compute_cycles, tile_step
from tinycl.hw.workload import STEP_NAMES, LayerWork, Workload

_ZERO = dict.fromkeys(STEP_NAMES, 0)


def mapping_for(target: Target, overrides: dict | None = None):
    """The one mapping of ``target``."""
    if target.accelerator == "eta-array":
        return EtaArray(overrides)
    if target.accelerator == "tinycl-pu":
        return TinyclPU(overrides)
    return Tiled() if target.kind == "tiled" else Flat()


def replay_traffic(w: Workload) -> dict:
    """Replay-memory bytes of the event (read every stored latent, write the new ones); none
    when the event keeps no replays (``n_replays == 0``: there is no replay memory)."""
    return w.replay_traffic_bytes() if w.n_replays > 0 else {"read": 0, "written": 0}


def _bw(target: Target, level: str | None) -> float | None:
    if level is None or level == "none":
        return None
    return target.level(level).bandwidth_bytes_per_cycle


def _traffic_level(target: Target, home: str | None) -> str:
    if home not in (None, "none"):
        return home
    return target.memory[1].name if target.kind == "tiled" and len(target.memory) > 1 else target.memory[0].name


class Flat:
    """Rate table (flat target) or PULP tiles (tiled target, :class:`Tiled`)."""

    name = "flat"

    def _step(self, l: LayerWork, step: str, target: Target, prec: str, batch: int, home) -> tuple:
        if l.macs[step] == 0 and l.bytes_read[step] == 0:
            return 0.0, 0
        traffic = l.bytes_read[step] + l.bytes_written[step]
        comp = compute_cycles(l, step, target, prec, batch)
        bw = _bw(target, home)
        return max(comp, traffic / bw if bw else 0.0) + target.layer_overhead_cycles, 0

    def map(self, w: Workload, target: Target, model=None, optimizer: str = "sgd") -> Mapped:
        home = plan_memory(w, target, optimizer).placement.get("working_set")
        level = _traffic_level(target, home)
        out, l1_peak = [], 0
        for l in w.layers:
            prec = "int8" if l.frozen and "int8" in target.precisions else w.precision
            reps = w.batch if l.frozen else w.steps
            sc = {}
            for s in STEP_NAMES:
                sc[s], l1b = self._step(l, s, target, prec, 1 if l.frozen else w.step_batch, home)
                l1_peak = max(l1_peak, l1b)
            traffic = sum(l.bytes_read[s] + l.bytes_written[s] for s in STEP_NAMES) * reps
            out.append(LayerCost(l.name, l.type, l.primitive, l.frozen, dict(l.macs), sc, reps,
                                 {level: traffic} if traffic else {}))
        out.append(self._replay(w, target, optimizer, home))
        return Mapped(self.name, out, l1_peak)

    @staticmethod
    def _replay(w: Workload, target: Target, optimizer: str, home) -> LayerCost:
        """Replay memory: read every stored latent, write the new ones, dequantise all into the step."""
        rt = replay_traffic(w)
        rep_level = plan_memory(w, target, optimizer).placement.get("replay_memory")
        bw = _bw(target, rep_level) or _bw(target, home)
        ops = (w.n_replays + w.batch) * w.latent_elements if w.latent_layer is not None and w.n_replays else 0
        rate = target.elementwise_ops_per_cycle.get("int8", target.elementwise_ops_per_cycle[w.precision])
        nbytes = rt["read"] + rt["written"]
        cyc = max(ops / rate, nbytes / bw if bw else 0.0)
        level = rep_level if rep_level not in (None, "none") else _traffic_level(target, home)
        return LayerCost("replay memory", "Replay", "replay", False, dict(_ZERO), {"forward": cyc}, 1,
                         {level: nbytes} if nbytes else {})


class Tiled(Flat):
    """PULP: each step tiled over L1; a step whose working set spilled past L2 is bound by that level."""

    name = "tiled"

    def _step(self, l, step, target, prec, batch, home):
        if l.macs[step] == 0 and l.bytes_read[step] == 0:
            return 0.0, 0
        tp = tile_step(l, step, target, prec, batch)
        cyc = tp.cycles
        if home not in (None, "none", target.memory[1].name):
            bw = _bw(target, home)
            if bw:
                cyc = max(cyc, (l.bytes_read[step] + l.bytes_written[step]) / bw)
        return cyc, tp.l1_bytes


def conv_paddings(w: Workload) -> dict:
    """Conv name -> padding, from the captured graph's geometry (square padding and stride only)."""
    out = {}
    for l in w.layers:
        if l.primitive in ("conv", "pointwise", "depthwise"):
            (ph, pw), (sh, sw) = l.geom["padding_hw"], l.geom["stride_hw"]
            if ph != pw or sh != sw:
                raise TinyclError(f"layer {l.name!r}: the ETA model needs square padding and stride")
            out[l.name] = ph
    return out


class EtaArray:
    """The ETA PE array: adaptive layers per step of ``step_batch`` samples, frozen ones per sample."""

    name = "eta-array"

    def __init__(self, overrides=None):
        self.overrides = overrides

    def map(self, w: Workload, target: Target, model=None, optimizer: str = "sgd") -> Mapped:
        from tinycl.hw.accel_eta import load_array
        from tinycl.hw.accel_eta.model import layer_steps
        cfg = load_array(None, target, self.overrides)
        dram = [m for m in target.memory if m.bandwidth_bytes_per_cycle][-1].name
        by_name = {l.name: l for l in w.layers}
        out = []
        for r in layer_steps(w, conv_paddings(w), cfg):
            l = by_name.get(r.name)
            if l is None:   # the SGD update of all adaptive parameters, once per step
                macs = dict(_ZERO, update=sum(x.macs["update"] for x in w.adaptive))
                out.append(LayerCost("update", "SGD", "update", False, macs, dict(r.cycles), w.steps,
                                     {dram: r.bytes_dram * w.steps}))
                continue
            reps = w.batch if l.frozen else w.steps
            out.append(LayerCost(l.name, l.type, l.primitive, l.frozen, dict(l.macs), dict(r.cycles), reps,
                                 {dram: r.bytes_dram * reps}))
        rt = replay_traffic(w)
        nbytes = rt["read"] + rt["written"]
        out.append(LayerCost("replay memory", "Replay", "replay", False, dict(_ZERO),
                             {"forward": nbytes / cfg.dram_bytes_per_cycle}, 1, {dram: nbytes} if nbytes else {}))
        return Mapped(self.name, out)


class TinyclPU:
    """The TinyCL window PU (snake order): every sample runs alone (batch 1), so a step of
    ``step_batch`` samples is ``step_batch`` PU steps; the PU's own per-access energies apply."""

    name = "tinycl-pu"
    order = "snake"

    def __init__(self, overrides=None):
        self.overrides = overrides

    def map(self, w: Workload, target: Target, model=None, optimizer: str = "sgd") -> Mapped:
        from tinycl.hw.accel_tinycl import load_arch
        from tinycl.hw.accel_tinycl.cost import control_counts, loss_counts, update_counts
        from tinycl.hw.accel_tinycl.layers import layer_passes
        arch = load_arch(None, target, self.overrides)
        level = target.memory[0].name
        pads = conv_paddings(w)
        per_step = w.steps * w.step_batch
        out = []
        for l in w.layers:
            passes = layer_passes(arch, l, pads.get(l.name, 0), self.order, w.step_batch)
            if not passes:
                continue
            out.append(self._cost(arch, l.name, l.type, l.primitive, l.frozen, dict(l.macs), passes,
                                  w.batch if l.frozen else per_step, level))
        classes = math.prod(w.layers[-1].out_shape)
        extra = [("loss", "Loss", "loss", {"forward": loss_counts(arch, classes)}, per_step),
                 ("update", "SGD", "update",
                  {"update": update_counts(arch, sum(x.params for x in w.adaptive))}, per_step)]
        for name, typ, prim, passes, reps in extra:
            macs = dict(_ZERO, update=sum(x.macs["update"] for x in w.adaptive)) if prim == "update" else dict(_ZERO)
            out.append(self._cost(arch, name, typ, prim, False, macs, passes, reps, level))
        words = math.prod(w.layers[0].in_shape) if w.latent_layer is None else w.latent_elements
        new = control_counts(arch, words, new=True, inserted=w.n_replays > 0)
        rep = control_counts(arch, words, new=False, inserted=False)
        cyc = (new.cycles(arch) * w.batch + rep.cycles(arch) * w.n_replays)
        dyn = new.energy_j(arch) * w.batch + rep.energy_j(arch) * w.n_replays
        nbytes = ((new.total_reads + new.total_writes) * w.batch
                  + (rep.total_reads + rep.total_writes) * w.n_replays) * arch.word_bytes
        out.append(LayerCost("replay memory", "Control", "replay", False, dict(_ZERO), {"forward": cyc}, 1,
                             {level: nbytes}, dyn))
        return Mapped(self.name, out)

    @staticmethod
    def _cost(arch, name, typ, prim, frozen, macs, passes: dict, reps: int, level: str) -> LayerCost:
        sc = dict.fromkeys(STEP_NAMES, 0)
        dyn, words = 0.0, 0
        for step, pc in passes.items():
            sc[step] += pc.cycles(arch)
            dyn += pc.energy_j(arch)
            words += pc.total_reads + pc.total_writes
        return LayerCost(name, typ, prim, frozen, macs, sc, reps, {level: words * arch.word_bytes * reps}, dyn * reps)
