"""Latency, energy and memory of a learning event on a target: the per-layer profile.

The numbers come from the one cost pipeline (:mod:`tinycl.hw.pipeline`): workload -> mapping
(the target's one model: flat rate table, tiled PULP kernels, ETA PE array or TinyCL window PU)
-> cycles -> energy -> memory plan. Frozen layers run an INT8 forward per new sample (``batch``
times); adaptive layers run ``steps`` training steps. Cycles are of ``target.clock_hz``.
"""

from __future__ import annotations

import math
from pathlib import Path

from torch import nn

from tinycl.hw import pipeline
from tinycl.hw.spec import split_overrides
from tinycl.hw.target import Target, load_target
from tinycl.hw.workload import Workload, build_workload

TRAIN_STEPS = ("forward", "backward_input", "backward_weight", "update")


def profile_workload(w: Workload, target: Target, optimizer: str = "sgd", model: nn.Module | None = None,
                     overrides: dict | None = None) -> dict:
    """Profile a built workload on a loaded target (see :func:`profile`)."""
    return pipeline.run(w, target, model, optimizer, overrides)


def resolve_target(target: str | Target, overrides: dict | None = None) -> Target:
    """A loaded target; ``overrides`` are ``{"<file>:<key>": value}`` (see :mod:`tinycl.hw.spec`)."""
    if isinstance(target, Target):
        return target
    return load_target(target, split_overrides(overrides, Path(str(target)).stem))


def profile(model: nn.Module, input_shape, target: str | Target, precision: str = "fp32",
            latent_layer: str | None = None, batch: int = 1, n_replays: int = 0, lr_bits: int = 8,
            optimizer: str = "sgd", step_batch: int | None = None, overrides: dict | None = None) -> dict:
    """Per-layer and total MACs, cycles, latency (s), energy (J) and peak memory (bytes per level)
    of one learning event of ``model`` on ``target``. Layer ``macs`` and ``step_cycles`` are per
    step; ``cycles``, ``latency_s`` and ``energy_j`` are per learning event. ``overrides``
    (``{"<file>:<key>": value}``) move numbers of the spec files (sensitivity, solving)."""
    t = resolve_target(target, overrides)
    w = build_workload(model, input_shape, latent_layer, precision, batch, n_replays, lr_bits, step_batch)
    return profile_workload(w, t, optimizer, model, overrides)


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
