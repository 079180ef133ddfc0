"""Precision policies: the format of weights, activations and gradients, and how sums accumulate.

A policy is data; the network applies it. Names:

========  =========  ===========  =========  ============  ==============
policy    weights    activations  gradients  accumulate    master weights
========  =========  ===========  =========  ============  ==============
fp32      fp32       fp32         fp32       fp32          n/a
fp16      fp16       fp16         fp16       fp32          fp32 (option)
bf16      bf16       bf16         bf16       fp32          fp32 (option)
========  =========  ===========  =========  ============  ==============

``accumulate="native"`` rounds every partial sum to the policy's format (one rounding
per multiply-accumulate, as PULP FP16 SIMD kernels do). It is exact but runs a Python
loop over the reduction dimension, so use it on small shapes only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from ..errors import TinyclError
from .formats import BYTES, round_to, stochastic_round


@dataclass(frozen=True)
class Precision:
    """Where each tensor lives during training.

    ``loss_scale``: ``None`` (off), a float (static), or ``"dynamic"``.
    ``stochastic``: round gradients and (without master weights) updates stochastically.
    """

    name: str
    weights: str = "fp32"
    activations: str = "fp32"
    gradients: str = "fp32"
    accumulate: str = "fp32"  # "fp32" or "native"
    master_weights: bool = True
    stochastic: bool = False
    loss_scale: float | str | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def is_fp32(self) -> bool:
        return self.weights == self.activations == self.gradients == "fp32"

    @property
    def native(self) -> str | None:
        """The format partial sums are rounded to, or None for FP32 accumulation."""
        return self.activations if self.accumulate == "native" and not self.is_fp32 else None

    def bytes_per(self, kind: str) -> int:
        """Bytes of one element of ``kind`` ('weights', 'activations', 'gradients')."""
        return BYTES[getattr(self, kind)]

    def weight(self, x: torch.Tensor) -> torch.Tensor:
        return round_to(x, self.weights)

    def act(self, x: torch.Tensor) -> torch.Tensor:
        return round_to(x, self.activations)

    def grad(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.stochastic:
            return stochastic_round(x, self.gradients, generator)
        return round_to(x, self.gradients)

    def store_weight(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Round an updated weight to its storage format (identity with master weights)."""
        if self.master_weights:
            return x
        if self.stochastic:
            return stochastic_round(x, self.weights, generator)
        return round_to(x, self.weights)


POLICIES = {
    "fp32": Precision("fp32"),
    "fp16": Precision("fp16", "fp16", "fp16", "fp16", loss_scale="dynamic"),
    "bf16": Precision("bf16", "bf16", "bf16", "bf16"),
}


def register_precision(policy: Precision) -> None:
    """Make a policy selectable by name everywhere a precision is (run, profile, from_torch)."""
    POLICIES[policy.name] = policy


def get_precision(name: str | Precision, **overrides) -> Precision:
    """Look up a policy by name and apply field overrides (e.g. ``accumulate="native"``)."""
    if isinstance(name, Precision):
        base = name
    else:
        if name not in POLICIES:
            raise TinyclError(f"unknown precision {name!r}; allowed: {', '.join(POLICIES)}")
        base = POLICIES[name]
    if overrides.get("accumulate", base.accumulate) not in ("fp32", "native"):
        raise TinyclError(f"unknown accumulate {overrides['accumulate']!r}; allowed: fp32, native")
    return replace(base, **overrides) if overrides else base
