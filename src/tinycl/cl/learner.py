"""The adaptive part of a latent-replay learner: the back of the network, trained by tinycl's engine.

Each step trains on ``batch_size`` new latents concatenated with ``replay_batch``
replayed ones (drawn by ``replay_fn``), as in latent replay (Pellegrini et al. 2020).

Small steps: a back without batch norm in training mode trains on every step, even of one
sample. With batch norm in training mode a step needs at least two samples (batch statistics),
so an epoch's last step that would hold a single sample (one new sample left over, no replay)
is merged into the step before it; an experience with one sample in all and no replay cannot
be trained with batch statistics and raises one line.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from ..errors import TinyclError
from ..kernels.optim import SGD
from ..graph import Graph
from ..models.convert import from_graph, from_torch
from ..models.layers import BatchNorm2d


class Learner:
    """Trains ``back`` (a captured graph, or a torch module to capture) on latents."""

    def __init__(self, back: nn.Module | Graph, latent_shape, precision: str, lr: float, momentum: float,
                 weight_decay: float, generator: torch.Generator):
        if isinstance(back, Graph):
            self.net = from_graph(back, precision=precision).train()
        else:
            self.net = from_torch(back, tuple(latent_shape), precision=precision).train()
        self.net.generator = generator
        self.opt = SGD(lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.gen = generator
        self.samples_trained = 0
        self.nonfinite_steps = 0  # steps whose loss was NaN or infinite (divergence)
        self.batch_stats = any(isinstance(layer, BatchNorm2d) and not layer.frozen_stats
                               for layer in self.net.layers())

    def train_experience(self, x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int,
                         replay_fn: Callable[[int], tuple[torch.Tensor, torch.Tensor]] | None = None,
                         replay_batch: int = 0, progress: bool = False, desc: str = "train",
                         step: Callable[[torch.Tensor, torch.Tensor, int], float] | None = None,
                         hooks: list | None = None) -> float:
        """Train on latents ``x`` (float) with labels ``y``; returns the mean loss of the last epoch.

        ``step(xb, yb, n_new) -> loss`` trains one step on a batch whose first ``n_new`` samples
        are new and the rest replayed (default: cross-entropy on all, :meth:`train_step`).
        ``hooks``: objects with ``before_step(learner, n_steps)`` and ``after_step(learner, loss)``
        (plugins; ``n_steps`` is the number of steps of the whole experience).
        Steps whose loss is not finite are counted in ``nonfinite_steps``.
        """
        step = step or self.train_step
        hooks = hooks or []
        n = len(x)
        replays = replay_fn is not None and replay_batch > 0
        bounds = self._steps(n, batch_size, replays)
        bar = tqdm(total=epochs * len(bounds), desc=desc, unit="step", disable=None if progress else True,
                   leave=False)
        last = float("nan")
        for _ in range(epochs):
            perm = torch.randperm(n, generator=self.gen)
            losses = []
            for a, b in bounds:
                idx = perm[a:b]
                xb, yb = x[idx].float(), y[idx]
                if replays:
                    rx, ry = replay_fn(replay_batch)
                    xb, yb = torch.cat([xb, rx.float()]), torch.cat([yb, ry])
                for h in hooks:
                    h.before_step(self, epochs * len(bounds))
                loss = step(xb, yb, b - a)
                self.nonfinite_steps += not math.isfinite(loss)
                losses.append(loss)
                self.samples_trained += len(xb)
                bar.update(1)
                for h in hooks:
                    h.after_step(self, loss)
            last = sum(losses) / max(len(losses), 1)
            bar.set_postfix(loss=f"{last:.3f}")
        bar.close()
        return last

    def train_step(self, xb: torch.Tensor, yb: torch.Tensor, n_new: int) -> float:
        """One step of cross-entropy on the whole batch (new and replayed alike)."""
        return self.net.train_step(xb, yb, self.opt)

    def _steps(self, n: int, batch_size: int, replays: bool) -> list[tuple[int, int]]:
        """(start, end) of each step's new samples in an epoch, by the small-step rule (module doc)."""
        bounds = [(a, min(a + batch_size, n)) for a in range(0, n, batch_size)] or ([(0, 0)] if replays else [])
        if not self.batch_stats or replays or not bounds or bounds[-1][1] - bounds[-1][0] >= 2:
            return bounds
        if len(bounds) == 1:
            raise TinyclError("an experience has 1 training sample and no replay; a back with batch norm "
                              "needs at least 2 samples per step (give it more data or replay)")
        return bounds[:-2] + [(bounds[-2][0], n)]

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Predicted labels for latents ``x``."""
        return torch.cat([self.net.predict(x[i:i + batch_size].float()).argmax(1)
                          for i in range(0, len(x), batch_size)]) if len(x) else torch.zeros(0, dtype=torch.long)

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "samples": self.samples_trained,
                "nonfinite_steps": self.nonfinite_steps,
                "scaler": self.net.scaler.state_dict() if self.net.scaler else None}

    def load_state_dict(self, sd: dict) -> None:
        self.net.load_state_dict(sd["net"])
        self.opt.load_state_dict(sd["opt"])
        self.samples_trained = sd["samples"]
        self.nonfinite_steps = sd.get("nonfinite_steps", 0)
        if self.net.scaler and sd["scaler"]:
            self.net.scaler.load_state_dict(sd["scaler"])
