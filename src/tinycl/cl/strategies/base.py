"""The strategy object: how one experience is trained, what it remembers, how it predicts.

A run (:mod:`tinycl.cl.runner`) is a loop over experiences; for each it calls, in order::

    strategy.new_data(i)          -> (train indices, new latents, labels)
    plugin.before_experience(run)
    strategy.train(x, y)          # plugin.before_step / after_step around every step
    plugin.after_training(run)    # e.g. CWR* consolidation
    strategy.after_training(x, y) # e.g. add to the replay memory, snapshot the back
    plugin.after_experience(run)  # metrics, log, checkpoint, progress

A strategy overrides only what it changes. Bytes it keeps beyond the back and the replay
memory go in :meth:`Strategy.footprint`; extra work per step or per experience in
:meth:`Strategy.extra_macs` and :meth:`Strategy.event_extra`.
"""

from __future__ import annotations

import math

import torch

from ...errors import TinyclError
from ...numerics.formats import BYTES
from ...numerics.precision import get_precision
from ..replay import through

REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make a strategy available as ``strategy: <cls.name>``."""
    REGISTRY[cls.name] = cls
    return cls


class Strategy:
    """Plain fine-tuning on the new data (``naive``); the base of every strategy."""

    name = "naive"
    OPTIONS: dict[str, float] = {}   # strategy_options: name -> default (finite numbers >= 0)
    quantize_new = False             # accepts lr_quantize_new (trains against a latent memory)
    trains_back = True               # False: the back is not trained (no back cost, no CWR*)
    replays_per_step = False         # True: each training step mixes replay_batch replayed samples

    @classmethod
    def check_own_options(cls, options: dict) -> None:
        """Rules of the strategy's own options beyond finite numbers >= 0 (raise one line)."""

    def __init__(self, run):
        self.run, self.cfg = run, run.cfg
        self.options = {**self.OPTIONS, **(run.cfg.get("strategy_options") or {})}
        self.memory = None

    # -- life cycle -------------------------------------------------------------------
    def start(self, first_latents: torch.Tensor) -> None:
        """Called once after the learner is built, before any saved state is loaded."""

    def new_data(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(train indices, latents, labels) of experience ``i``."""
        idx = self.train_indices(i)
        x, y = self.run.setup.train_latents[idx], self.run.setup.dataset.train.y[idx]
        if self.cfg["lr_quantize_new"]:
            x = through(self.memory.quantizer, x)
        return idx, x, y

    def train_indices(self, i: int) -> torch.Tensor:
        return self.run.stream[i].train_idx

    def train(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Train on the new latents (and replays)."""
        c = self.cfg
        self.run.learner.train_experience(x, y, c["epochs"], c["batch_size"], self.replay_fn(), c["replay_batch"],
                                          False, step=self.step, hooks=self.run.plugins)

    def replay_fn(self):
        """``n -> (latents, labels)`` of replayed samples, or None."""
        return None

    step = None  # ``step(xb, yb, n_new) -> loss``; None: cross-entropy on the whole batch

    def after_training(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """After the experience's training (e.g. store samples, snapshot weights)."""

    @torch.no_grad()
    def predict(self, latents: torch.Tensor) -> torch.Tensor:
        return self.run.learner.predict(latents)

    # -- a custom step ----------------------------------------------------------------
    def logit_step(self, xb: torch.Tensor, yb: torch.Tensor, n_new: int, loss_fn, penalty=None) -> float:
        """One step with ``loss_fn(logits, yb, n_new) -> (value, dL/dlogits)``; ``penalty()`` may add
        ``(value, {param: grad})`` (a regulariser). Loss scaling as in the engine's ``train_step``."""
        net = self.run.learner.net
        net.train()
        out = net.forward(xb)
        value, g = loss_fn(out, yb, n_new)
        scale = net.scaler.scale if net.scaler is not None else 1.0
        net.backward(g * scale if scale != 1.0 else g, need_input=False)
        value = float(value)
        if penalty is not None:
            pv, grads = penalty()
            for name, p in net._params():
                if name in grads and p.grad is not None:
                    p.grad = p.grad + (grads[name] * scale).to(p.grad.dtype)
            value += float(pv)
        net.step(self.run.learner.opt)
        return value

    # -- bytes and work ---------------------------------------------------------------
    def memory_bytes(self, allocated: bool = False) -> dict:
        """Bytes of the replay memory by part (see :meth:`tinycl.cl.memory.ReplayMemory.nbytes`)."""
        if self.memory is None:
            return {"payload": 0, "labels": 0, "experiences": 0, "metadata": 0, "total": 0}
        return self.memory.nbytes(allocated=allocated)

    def footprint(self, base: dict) -> dict:
        """The footprint (bytes) with this strategy's own state added (keys other than ``total``)."""
        return base

    def extra_macs(self, trained: int, new: int) -> int:
        """MACs beyond training the back on ``trained`` samples (e.g. a teacher's forward)."""
        return 0

    def event_extra(self) -> dict | None:
        """What this strategy adds to one learning event beyond the modelled back training, or None."""
        return None

    def extra(self, state_bytes: int, ops_per_step: int, read_bytes_per_step: int, macs_per_new_sample: int,
              note: str) -> dict:
        """The form of :meth:`event_extra`: bytes kept beyond the back and the latent memory, operations
        and bytes read per training step beyond the modelled event, MACs per new sample outside the
        steps (e.g. a Fisher pass), and one line on what the modelled event leaves out."""
        return {"strategy": self.name, "extra_state_bytes": int(state_bytes), "extra_ops_per_step": int(ops_per_step),
                "extra_read_bytes_per_step": int(read_bytes_per_step),
                "extra_macs_per_new_sample": int(macs_per_new_sample), "note": note}

    # -- state --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, sd: dict) -> None:
        pass

    # -- helpers ------------------------------------------------------------------------
    def back_state_bytes(self) -> int:
        """Bytes of one copy of the back: weights in the weight format, float buffers in fp32."""
        net = self.run.learner.net
        prec = get_precision(self.cfg["precision"])
        n = sum(p.numel() for p in net.named_parameters().values())
        buf = sum(b.numel() for _, b in net.root.named_buffers() if b.dtype.is_floating_point)
        return n * BYTES[prec.weights] + 4 * buf

    def n_params(self) -> int:
        return sum(p.numel() for p in self.run.learner.net.named_parameters().values())

    def back_macs(self) -> dict:
        return self.run.back_macs

    def seen_before(self, i: int) -> list[int]:
        """Labels introduced in experiences 0..i-1."""
        return sorted({c for e in self.run.stream[:i] for c in e.new_classes})


def check_options(name: str, given) -> None:
    """``strategy_options`` for strategy ``name``: known keys, finite numbers >= 0."""
    cls = REGISTRY[name]
    if given is None:
        return
    if not isinstance(given, dict):
        raise TinyclError(f"config: 'strategy_options' must be a mapping of option to number, got {given!r}")
    for k, v in given.items():
        if k not in cls.OPTIONS:
            allowed = ", ".join(cls.OPTIONS) or "none"
            raise TinyclError(f"config: strategy {name} has no option '{k}'; its options: {allowed}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise TinyclError(f"config: strategy option '{k}' must be a finite number >= 0, got {v!r}")
    cls.check_own_options(given)
