"""Losses and regularisers of the CL methods: each returns its value and its gradient, no autograd.

Logit losses return ``(value, dL/dlogits)`` for a batch of logits (N x K); penalties return
``(value, {name: dL/dw})``. All are means over the batch where the method defines them so.
Checked against torch autograd in float64 (tests/test_strategies.py).
"""

from __future__ import annotations

import torch

from ..kernels import loss as LOSS


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean softmax cross-entropy and its gradient (the engine's kernel)."""
    value, probs = LOSS.cross_entropy_forward(logits, y)
    return value, LOSS.cross_entropy_backward(probs, y)


def masked_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ER-ACE's asymmetric loss on new data: cross-entropy over the classes present in ``y`` only.

    The softmax runs over the logits of ``unique(y)``; the other logits get zero gradient.
    """
    present = torch.unique(y)
    remap = torch.full((logits.shape[1],), -1, dtype=torch.long)
    remap[present] = torch.arange(len(present))
    value, g_sub = cross_entropy(logits[:, present], remap[y])
    g = torch.zeros_like(logits)
    g[:, present] = g_sub
    return value, g


def distillation(logits: torch.Tensor, teacher: torch.Tensor, units: torch.Tensor,
                 temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """LwF: ``KL(softmax(teacher/T) || softmax(logits/T))`` over the output ``units``, batch mean.

    As Avalanche's LwF (``kl_div(..., reduction="batchmean")``); gradient ``(p - q) / (T N)`` on
    the units, zero elsewhere.
    """
    n = logits.shape[0]
    z = logits[:, units] / temperature
    logp = z - torch.logsumexp(z, dim=1, keepdim=True)
    q = torch.softmax(teacher[:, units].to(logits.dtype) / temperature, dim=1)
    logq = torch.log(q.clamp_min(torch.finfo(q.dtype).tiny))
    value = (q * (logq - logp)).sum() / n
    g = torch.zeros_like(logits)
    g[:, units] = (torch.exp(logp) - q) / (temperature * n)
    return value, g


def logit_mse(logits: torch.Tensor, stored: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DER: mean over all elements of ``(logits - stored)**2`` (as ``F.mse_loss``)."""
    stored = stored.to(logits.dtype)
    return LOSS.mse_forward(logits, stored), LOSS.mse_backward(logits, stored)


def quadratic_penalty(params: dict[str, torch.Tensor], importance: dict[str, torch.Tensor],
                      anchor: dict[str, torch.Tensor], strength: float) -> tuple[torch.Tensor, dict]:
    """EWC / SI: ``strength * sum(importance * (w - anchor)**2)`` and its gradient per parameter.

    EWC passes ``strength = lambda / 2``; SI passes ``c``.
    """
    value = torch.zeros((), dtype=torch.float64)
    grads = {}
    for k, w in params.items():
        d = w.to(importance[k].dtype) - anchor[k]
        value = value + (importance[k] * d * d).sum().double()
        grads[k] = 2.0 * strength * importance[k] * d
    return strength * value, grads
