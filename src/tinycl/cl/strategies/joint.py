"""``joint``: train on all data seen so far at every experience (the upper bound, no memory limit)."""

import torch

from .base import Strategy, register


@register
class Joint(Strategy):
    name = "joint"

    def train_indices(self, i: int) -> torch.Tensor:
        return torch.cat([s.train_idx for s in self.run.stream[:i + 1]])
