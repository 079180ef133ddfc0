"""Loss scaling for low-precision training: static, or dynamic with skip-on-overflow."""

from __future__ import annotations

import math


class LossScaler:
    """Multiply the loss gradient by ``scale`` before backward; unscale the grads after.

    Dynamic mode halves the scale and skips the step when a gradient overflows, and
    doubles it after ``growth_interval`` clean steps (as in mixed-precision practice).
    """

    def __init__(self, scale: float = 2.0 ** 15, dynamic: bool = True, growth_interval: int = 2000,
                 min_scale: float = 1.0, max_scale: float = 2.0 ** 24):
        self.scale = float(scale)
        self.dynamic = dynamic
        self.growth_interval = growth_interval
        self.min_scale = min_scale
        self.max_scale = max_scale
        self.good_steps = 0
        self.skipped = 0

    def update(self, found_overflow: bool) -> bool:
        """Record a step's outcome; returns True when the optimizer step should run."""
        if not self.dynamic:
            if found_overflow:
                self.skipped += 1
            return not found_overflow
        if found_overflow:
            self.scale = max(self.scale / 2.0, self.min_scale)
            self.good_steps = 0
            self.skipped += 1
            return False
        self.good_steps += 1
        if self.good_steps >= self.growth_interval:
            self.scale = min(self.scale * 2.0, self.max_scale)
            self.good_steps = 0
        return True

    def state_dict(self) -> dict:
        return {"scale": self.scale, "good_steps": self.good_steps, "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.scale = float(state["scale"])
        self.good_steps = int(state["good_steps"])
        self.skipped = int(state["skipped"])


def make_scaler(loss_scale) -> LossScaler | None:
    """``None`` -> no scaling; a number -> static; ``"dynamic"`` -> dynamic."""
    if loss_scale is None:
        return None
    if loss_scale == "dynamic":
        return LossScaler(dynamic=True)
    value = float(loss_scale)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"loss scale must be a positive number, got {loss_scale!r}")
    return LossScaler(scale=value, dynamic=False)
