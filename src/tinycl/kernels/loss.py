"""Losses: each returns the mean loss over the batch and the gradient of that mean."""

from __future__ import annotations

import torch


def cross_entropy_forward(logits: torch.Tensor, target: torch.Tensor):
    """Softmax cross-entropy, mean over the batch. Returns ``(loss, probs)``.

    Computed in the logits' dtype with the max subtracted (stable for large logits).
    """
    z = logits - logits.max(dim=1, keepdim=True).values
    logsum = torch.log(torch.exp(z).sum(dim=1, keepdim=True))
    logp = z - logsum
    loss = -logp.gather(1, target.view(-1, 1)).mean()
    return loss, torch.exp(logp)


def cross_entropy_backward(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``d(mean CE)/d logits = (softmax - onehot) / N``."""
    g = probs.clone()
    g[torch.arange(g.shape[0]), target] -= 1.0
    return g / g.shape[0]


def mse_forward(y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over all elements of ``(y - target)**2`` (torch's default reduction)."""
    return ((y - target) ** 2).mean()


def mse_backward(y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 2.0 * (y - target) / y.numel()
