"""Cost of a trial without running it: ``tinycl profile``'s model and the memory planner.

For each trial and each requested target: latency (seconds) and energy (joules) of one
learning event (the same call as ``tinycl run``'s ``learning_event``), the replay memory of
``n_replays`` latents at ``lr_bits`` (bytes, as the run's memory stores them), and the device
bytes of a learning event: the planner's tensor groups (working set, adaptive weights,
optimizer state, input batch, frozen INT8 weights) with its replay group replaced by that
replay memory. A trial over a constraint is pruned with the reason, before any training.
"""

from __future__ import annotations

import torch

from ..errors import TinyclError
from ..hw.cost import profile
from ..numerics.latent_quant import LatentQuantizer
from ..cl.footprint import replay_budget_bytes

_BITS = {"fp16": 16, "fp32": 32}


class CostModel:
    """Cached cost queries: one captured model per (model, data shape), one profile per point."""

    def __init__(self):
        self._models: dict = {}
        self._profiles: dict = {}
        self._data: dict = {}

    def _shape(self, data: str) -> tuple:
        if data not in self._data:
            from ..data import load
            ds = load(data)
            self._data[data] = (tuple(ds.image_shape), ds.num_classes)
        return self._data[data]

    def _model(self, name: str, data: str):
        key = (name, data)
        if key not in self._models:
            from ..graph import capture
            from ..models.registry import create
            shape, classes = self._shape(data)
            m = create(name, num_classes=classes, input_shape=shape).eval()
            self._models[key] = (m, capture(m, shape))
        return self._models[key]

    def latent_shape(self, cfg: dict) -> tuple:
        _, graph = self._model(cfg["model"], cfg["data"])
        try:
            _, back = graph.split(cfg["latent_layer"])
        except TinyclError as e:
            raise TinyclError(f"config: 'latent_layer': {e}") from None
        return tuple(back.input_shape)

    def replay_bytes(self, cfg: dict) -> int:
        """Bytes of the full replay memory of ``cfg`` (raw replay gets the same bytes; 0 without replay)."""
        if cfg["strategy"] not in ("latent_replay", "raw_replay"):
            return 0
        shape = self.latent_shape(cfg)
        q = LatentQuantizer(cfg["lr_bits"], cfg["lr_granularity"], "minmax", seed=0)
        q.fit(torch.linspace(-1, 1, 2 * int(torch.tensor(shape).prod())).view(2, *shape))
        return int(replay_budget_bytes(cfg["n_replays"], shape, q))

    def event(self, cfg: dict, target: str) -> dict:
        """Latency (s), energy (J), planner groups (bytes) and fits of one learning event on ``target``."""
        bits = _BITS.get(cfg["lr_bits"], cfg["lr_bits"])
        key = (cfg["model"], cfg["data"], cfg["latent_layer"], target, cfg["precision"], cfg["batch_size"],
               cfg["replay_batch"], bits)
        if key not in self._profiles:
            model, _ = self._model(cfg["model"], cfg["data"])
            shape, _ = self._shape(cfg["data"])
            p = profile(model, shape, target, cfg["precision"], cfg["latent_layer"], cfg["batch_size"],
                        cfg["replay_batch"], bits)
            self._profiles[key] = {"latency_s": p["total"]["latency_s"], "energy_j": p["total"]["energy_j"],
                                   "groups": dict(p["memory"]["groups"]), "fits": bool(p["total"]["fits"]),
                                   "notes": list(p["memory"]["notes"])}
        return self._profiles[key]

    def trial_cost(self, cfg: dict, targets: list[str]) -> dict:
        """``replay_bytes``, and per target: latency_s, energy_j, device_bytes, fits."""
        replay = self.replay_bytes(cfg)
        out = {"replay_bytes": replay, "targets": {}}
        for t in targets:
            e = self.event(cfg, t)
            groups = dict(e["groups"])
            groups["replay_memory"] = replay
            out["targets"][t] = {"latency_s": e["latency_s"], "energy_j": e["energy_j"],
                                 "device_bytes": int(sum(groups.values())), "fits": e["fits"],
                                 "notes": e["notes"]}
        return out


def prune_reason(cost: dict, cons: dict) -> str | None:
    """Why a trial of this cost breaks the constraints (one line), or None when it meets them all."""
    t = cons["target"]
    c = cost["targets"][t]
    why = []
    if "memory_bytes" in cons and c["device_bytes"] > cons["memory_bytes"]:
        why.append(f"device memory {c['device_bytes']:,} B > {cons['memory_bytes']:,.0f} B on {t}")
    if "replay_bytes" in cons and cost["replay_bytes"] > cons["replay_bytes"]:
        why.append(f"replay memory {cost['replay_bytes']:,} B > {cons['replay_bytes']:,.0f} B")
    if "latency_s" in cons and c["latency_s"] > cons["latency_s"]:
        why.append(f"latency {c['latency_s'] * 1e3:.3g} ms > {cons['latency_s'] * 1e3:.3g} ms on {t}")
    if "energy_j" in cons and c["energy_j"] > cons["energy_j"]:
        why.append(f"energy {c['energy_j'] * 1e3:.3g} mJ > {cons['energy_j'] * 1e3:.3g} mJ on {t}")
    if cons.get("must_fit") and not c["fits"]:
        why.append(f"does not fit {t}'s memories ({'; '.join(c['notes']) or 'planner'})")
    return "; ".join(why) or None
