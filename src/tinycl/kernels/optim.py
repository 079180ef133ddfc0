"""Optimizers as in-place functional steps on named parameters (torch.optim semantics).

The update step costs one MAC per parameter for plain SGD; momentum adds one, weight
decay one, Adam about ten operations per parameter.
"""

from __future__ import annotations

import math

import torch


class SGD:
    """SGD with momentum, dampening, weight decay and Nesterov, as ``torch.optim.SGD``."""

    def __init__(self, lr=0.01, momentum=0.0, weight_decay=0.0, nesterov=False, dampening=0.0):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires momentum > 0 and dampening = 0")
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.nesterov, self.dampening = nesterov, dampening
        self.state: dict[str, torch.Tensor] = {}

    def step_one(self, name: str, p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Return the updated parameter; ``p`` is updated in place (``g`` is not modified)."""
        if self.weight_decay:
            g = g.add(p, alpha=self.weight_decay)
        if self.momentum:
            buf = self.state.get(name)
            if buf is None:
                buf = g.clone()
                self.state[name] = buf
            else:
                buf.mul_(self.momentum).add_(g, alpha=1 - self.dampening)
            g = g.add(buf, alpha=self.momentum) if self.nesterov else buf
        return p.add_(g, alpha=-self.lr)

    def step(self, names: list[str], params: list[torch.Tensor], grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """Update many parameters at once (multi-tensor kernels); same arithmetic as ``step_one``."""
        partial = self.momentum and len({n in self.state for n in names}) > 1
        if self.nesterov or self.dampening or partial:
            return [self.step_one(n, p, g) for n, p, g in zip(names, params, grads)]
        if self.weight_decay:
            grads = torch._foreach_add(grads, params, alpha=self.weight_decay)
        if self.momentum:
            if names[0] not in self.state:
                bufs = [g.clone() for g in grads]
                self.state.update(zip(names, bufs))
            else:
                bufs = [self.state[n] for n in names]
                torch._foreach_mul_(bufs, self.momentum)
                torch._foreach_add_(bufs, grads)
            grads = bufs
        torch._foreach_add_(params, grads, alpha=-self.lr)
        return params

    def ops_per_param(self) -> int:
        return 1 + (1 if self.weight_decay else 0) + (2 if self.momentum else 0)

    def state_dict(self) -> dict:
        return {"state": dict(self.state), "lr": self.lr}

    def load_state_dict(self, sd: dict) -> None:
        self.state = dict(sd["state"])
        self.lr = sd["lr"]


class Adam:
    """Adam (Kingma & Ba), L2 weight decay added to the gradient, as ``torch.optim.Adam``."""

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.state: dict[str, tuple[torch.Tensor, torch.Tensor, int]] = {}

    def step_one(self, name: str, p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if self.weight_decay:
            g = g + self.weight_decay * p
        b1, b2 = self.betas
        m, v, t = self.state.get(name, (torch.zeros_like(p), torch.zeros_like(p), 0))
        t += 1
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        self.state[name] = (m, v, t)
        step = self.lr / (1 - b1 ** t)
        denom = (v.sqrt() / math.sqrt(1 - b2 ** t)) + self.eps
        return p - step * m / denom

    def step(self, names, params, grads):
        return [self.step_one(n, p, g) for n, p, g in zip(names, params, grads)]

    def ops_per_param(self) -> int:
        return 10

    def state_dict(self) -> dict:
        return {"state": dict(self.state), "lr": self.lr}

    def load_state_dict(self, sd: dict) -> None:
        self.state = dict(sd["state"])
        self.lr = sd["lr"]
