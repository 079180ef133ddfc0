"""The adaptive part of a latent-replay learner: the back of the network, trained by tinycl's engine.

Each step trains on ``batch_size`` new latents concatenated with ``replay_batch``
replayed ones (drawn by ``replay_fn``), as in latent replay (Pellegrini et al. 2020).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from ..kernels.optim import SGD
from ..models.convert import from_torch


class Learner:
    """Trains ``back`` (a torch module, imported into a tinycl Network) on latents."""

    def __init__(self, back: nn.Module, latent_shape, precision: str, lr: float, momentum: float,
                 weight_decay: float, generator: torch.Generator):
        self.net = from_torch(back, tuple(latent_shape), precision=precision).train()
        self.net.generator = generator
        self.opt = SGD(lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.gen = generator
        self.samples_trained = 0

    def train_experience(self, x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int,
                         replay_fn: Callable[[int], tuple[torch.Tensor, torch.Tensor]] | None = None,
                         replay_batch: int = 0, progress: bool = False, desc: str = "train") -> float:
        """Train on latents ``x`` (float) with labels ``y``; returns the mean loss of the last epoch."""
        n = len(x)
        steps = max(1, (n + batch_size - 1) // batch_size)
        bar = tqdm(total=epochs * steps, desc=desc, unit="step", disable=None if progress else True, leave=False)
        last = float("nan")
        for _ in range(epochs):
            perm = torch.randperm(n, generator=self.gen)
            losses = []
            for i in range(steps):
                idx = perm[i * batch_size:(i + 1) * batch_size]
                xb, yb = x[idx].float(), y[idx]
                if replay_fn is not None and replay_batch > 0:
                    rx, ry = replay_fn(replay_batch)
                    xb, yb = torch.cat([xb, rx.float()]), torch.cat([yb, ry])
                if len(xb) < 2:  # batch statistics need two samples
                    continue
                losses.append(self.net.train_step(xb, yb, self.opt))
                self.samples_trained += len(xb)
                bar.update(1)
            last = sum(losses) / max(len(losses), 1)
            bar.set_postfix(loss=f"{last:.3f}")
        bar.close()
        return last

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Predicted labels for latents ``x``."""
        return torch.cat([self.net.predict(x[i:i + batch_size].float()).argmax(1)
                          for i in range(0, len(x), batch_size)]) if len(x) else torch.zeros(0, dtype=torch.long)

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "samples": self.samples_trained,
                "scaler": self.net.scaler.state_dict() if self.net.scaler else None}

    def load_state_dict(self, sd: dict) -> None:
        self.net.load_state_dict(sd["net"])
        self.opt.load_state_dict(sd["opt"])
        self.samples_trained = sd["samples"]
        if self.net.scaler and sd["scaler"]:
            self.net.scaler.load_state_dict(sd["scaler"])
