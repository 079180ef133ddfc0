"""Cost of a trial without running it: ``tinycl profile``'s model and the memory planner.

For each trial and each requested target: latency (seconds) and energy (joules) of one
learning event (the same call as ``tinycl run``'s ``learning_event``), the replay memory of
the strategy (``n_replays`` latents at ``lr_bits``, or raw images in their bytes, or
DER++'s logits with them: bytes, as the run's memory stores them), and the device
bytes of a learning event: the planner's tensor groups (working set, adaptive weights,
optimizer state, input batch, frozen INT8 weights) with its replay group replaced by the
strategy's replay memory, plus the strategy's own state (EWC's importance, LwF's teacher, ...).
A trial over a constraint is pruned with the reason, before any training.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import torch

from ..errors import TinyclError
from ..hw.cost import profile

_BITS = {"fp16": 16, "fp32": 32}
# the keys of tinycl.cl.footprint.footprint: a strategy's own state is what it adds beyond them
_BASE = ("front_weights", "back_weights", "back_master_weights", "back_gradients", "optimizer_state",
         "replay_memory", "latent_batch")
# what a strategy's memory and state depend on
_STATE_KEYS = ("model", "data", "latent_layer", "strategy", "strategy_options", "replay", "lr_bits",
               "lr_granularity", "n_replays", "replacement", "precision", "seed")


class CostModel:
    """Cached cost queries: one captured model per (model, data shape), one profile per point."""

    def __init__(self):
        self._models: dict = {}
        self._profiles: dict = {}
        self._data: dict = {}
        self._state: dict = {}

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

    def strategy_bytes(self, cfg: dict) -> tuple[int, dict]:
        """(replay memory bytes, the strategy's own state in bytes by name) of ``cfg``, as its run
        reports them in ``footprint_bytes``: the strategy is built on a stand-in run (the captured
        back, the data's shapes) and started on stand-in latents; no data is read, nothing trains.
        Every strategy that keeps samples is priced this way (latent or raw replay, DER++'s logits,
        GDumb's class-balanced memory), as are EWC's, SI's, LwF's and GDumb's copies of the back."""
        from ..cl.strategies import strategy_class
        from ..models.convert import from_graph

        key = json.dumps({k: cfg.get(k) for k in _STATE_KEYS}, sort_keys=True, default=str)
        if key in self._state:
            return self._state[key]
        cls = strategy_class(cfg["strategy"])
        if not cls.trains_back:
            raise TinyclError(f"strategy {cfg['strategy']} does not train the back: the sweep's cost model prices a "
                              f"learning event that trains it, so it cannot price or prune this strategy")
        _, graph = self._model(cfg["model"], cfg["data"])
        img, classes = self._shape(cfg["data"])
        _, back = graph.split(cfg["latent_layer"])
        shape = tuple(back.input_shape)
        data = SimpleNamespace(image_shape=img, num_classes=classes)
        run = SimpleNamespace(cfg=cfg, setup=SimpleNamespace(latent_shape=shape, back=back, dataset=data),
                              learner=SimpleNamespace(net=from_graph(back, precision=cfg["precision"])),
                              stream=[], i=0)
        strategy = cls(run)
        strategy.start(torch.linspace(-1, 1, 2 * math.prod(shape)).view(2, *shape))  # the value range sets no size
        if strategy.memory is not None and strategy.memory.sample_shape is None:  # as its first add sets it
            strategy.memory.sample_shape = tuple(img) if getattr(strategy, "raw", False) else shape
        replay = int(strategy.memory_bytes(allocated=True)["total"])
        base = {k: 0 for k in _BASE}
        own = {k: int(v) for k, v in strategy.footprint(dict(base, total=0)).items() if k not in base and k != "total"}
        self._state[key] = (replay, own)
        return replay, own

    def replay_bytes(self, cfg: dict) -> int:
        """Bytes of the full replay memory of ``cfg`` (0 for a strategy that keeps no samples)."""
        return self.strategy_bytes(cfg)[0]

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
        replay, own = self.strategy_bytes(cfg)
        out = {"replay_bytes": replay, "strategy_bytes": own, "targets": {}}
        for t in targets:
            e = self.event(cfg, t)
            groups = dict(e["groups"])
            groups["replay_memory"] = replay
            groups.update(own)
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
