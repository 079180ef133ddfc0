"""Memory planner: peak memory of a learning event from tensor lifetimes, per memory level.

Two phases run one after the other, so their working sets never coexist:

- frozen phase: the INT8 forward of the front on the new samples (activations 1 byte each);
- training step: forward of the adaptive part (activations kept for backward stay alive until
  their layer's backward), then backward in reverse order, where each layer holds dY, dX and its
  dW (the SGD update is applied right after the weight gradient, so one dW is alive at a time).

On a flat target the whole-layer im2col and transpose buffers (``LayerWork.scratch_bytes``)
join the working set; on a tiled target they live per tile in the L1 scratchpad (``tiling``).
Whole tensors are placed greedily, innermost level first, in the order: working set, adaptive
weights, optimizer state, input batch, replay memory, frozen weights (which prefer a read-only
level such as flash or MRAM). All sizes in bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tinycl.hw.target import BYTES_PER_ELEMENT, Target
from tinycl.hw.workload import Workload

OPTIMIZER_STATE = {"sgd": 0, "sgd-momentum": 1, "adam": 2}   # buffers of the weights' size


@dataclass
class MemoryPlan:
    """Where each tensor group lives and the peak bytes of each level."""

    groups: dict                  # group -> bytes
    placement: dict               # group -> level name (or "none" when it fits nowhere)
    peak_bytes: dict              # level -> bytes
    capacity: dict                # level -> bytes
    fits: bool
    frozen_peak: int
    training_peak: int
    timeline: list = field(default_factory=list)   # (label, bytes) of the training step
    notes: list = field(default_factory=list)


def frozen_peak_bytes(w: Workload, flat: bool) -> int:
    """Peak bytes of INT8 activations (and per-layer scratch on flat targets) in the frozen phase."""
    peak = 0
    for i, l in enumerate(w.layers):
        if not l.frozen:
            continue
        alive = sum(e for k, e in w.tensors.items() if w.first_use.get(k, -1) <= i <= w.last_use.get(k, -1))
        peak = max(peak, alive + (l.scratch_bytes["forward"] if flat else 0))
    return peak


def training_timeline(w: Workload, flat: bool) -> list:
    """(label, bytes) for every forward and backward layer step of one training step."""
    b = BYTES_PER_ELEMENT[w.precision]
    ad = [(i, l) for i, l in enumerate(w.layers) if not l.frozen]
    out = []
    saved_upto: set = set()
    for i, l in ad:
        saved_upto |= set(l.saved_keys)
        live = {k for k in w.tensors if w.first_use.get(k, -1) <= i <= w.last_use.get(k, -1)}
        live |= saved_upto
        live.add(l.in_key)
        size = sum(w.tensors.get(k, 0) for k in live) * b
        out.append((f"{l.name}:forward", size + (l.scratch_bytes["forward"] if flat else 0)))
    for pos in range(len(ad) - 1, -1, -1):
        i, l = ad[pos]
        saved = set()
        for _, m in ad[: pos + 1]:
            saved |= set(m.saved_keys)
        base = sum(w.tensors.get(k, 0) for k in saved) * b
        e_out = w.step_batch * _elems(l.out_shape)
        e_in = w.step_batch * _elems(l.in_shape)
        grads = (e_out + (e_in if l.macs["backward_input"] else 0)) * b
        dw = l.params * b if l.macs["backward_weight"] else 0
        scratch = max(l.scratch_bytes["backward_input"], l.scratch_bytes["backward_weight"]) if flat else 0
        out.append((f"{l.name}:backward", base + grads + dw + scratch))
    return out


def _elems(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def plan_memory(w: Workload, target: Target, optimizer: str = "sgd", l1_peak: int = 0) -> MemoryPlan:
    """Place the tensor groups of a learning event on ``target``'s memory levels.

    ``l1_peak`` is the largest tile working set from the tiler (tiled targets only).
    """
    flat = target.kind == "flat"
    b = BYTES_PER_ELEMENT[w.precision]
    timeline = training_timeline(w, flat)
    t_peak = max((s for _, s in timeline), default=0)
    f_peak = frozen_peak_bytes(w, flat)
    ad_params = sum(l.params for l in w.adaptive)
    groups = {
        "working_set": max(t_peak, f_peak),
        "adaptive_weights": ad_params * b,
        "optimizer_state": ad_params * b * OPTIMIZER_STATE[optimizer],
        "input_batch": w.batch * w.input_elements,          # raw samples, 1 byte per element
        "replay_memory": w.replay_memory_bytes(),
        "frozen_weights": sum(l.params for l in w.frozen),  # INT8
    }
    levels = [m for m in target.memory if not m.scratchpad]
    free = {m.name: m.size_bytes for m in levels}
    placement = {}
    for g, size in groups.items():
        if size == 0:
            continue
        cands = [m for m in levels if m.writable]
        if g == "frozen_weights":
            cands = [m for m in levels if not m.writable] + cands
        spot = next((m.name for m in cands if free[m.name] >= size), "none")
        placement[g] = spot
        if spot != "none":
            free[spot] -= size
    peak = {m.name: 0 for m in target.memory}
    for g, lvl in placement.items():
        if lvl != "none":
            peak[lvl] += groups[g]
    notes = []
    fits = "none" not in placement.values()
    for m in target.memory:
        if m.scratchpad:
            peak[m.name] = l1_peak
            if l1_peak > m.size_bytes:
                fits = False
                notes.append(f"smallest tile needs {l1_peak} B of {m.name} ({m.size_bytes} B)")
    for g, lvl in placement.items():
        if lvl == "none":
            notes.append(f"{g} ({groups[g]} B) fits in no memory level")
    return MemoryPlan(groups=groups, placement=placement, peak_bytes=peak,
                      capacity={m.name: m.size_bytes for m in target.memory}, fits=fits,
                      frozen_peak=f_peak, training_peak=t_peak, timeline=timeline, notes=notes)
