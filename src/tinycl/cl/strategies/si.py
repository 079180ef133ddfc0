"""``si``: Synaptic Intelligence (Zenke et al. 2017).

During an experience each parameter accumulates ``omega += -g * dw`` at every step, with ``g``
the gradient of the cross-entropy (without the penalty) and ``dw`` the step's change. After it,
``importance += omega / ((w_end - w_start)**2 + xi)`` (``xi``: ``eps``), the anchor becomes
``w_end`` and omega restarts. Step loss: ``CE + c * sum(importance * (w - anchor)**2)``.
Extra state, fp32, 16 bytes per parameter: importance, anchor, omega, the weights at the start
of the experience (and one step's old weights while it runs). Extra work per step: about 3 ops
per parameter for the penalty gradient and 2 for omega.
"""

import torch

from .. import losses as L
from .base import Strategy, register


@register
class SI(Strategy):
    name = "si"
    OPTIONS = {"c": 0.1, "eps": 0.001}

    def start(self, first_latents) -> None:
        self.importance = self.anchor = None
        self.omega = self.w_start = None

    def _weights(self) -> dict:
        return {k: w.detach().float().clone() for k, w in self.run.learner.net.named_parameters().items()}

    def step(self, xb, yb, n_new):
        net = self.run.learner.net
        if self.omega is None:
            self.w_start = self._weights()
            self.omega = {k: torch.zeros_like(v) for k, v in self.w_start.items()}
        before = self._weights()
        grads = {}

        def penalty():
            grads.update({k: g.float() for k, g in net.named_grads().items()})  # the CE gradient alone
            if self.importance is None:
                return 0.0, {}
            return L.quadratic_penalty(net.named_parameters(), self.importance, self.anchor, self.options["c"])
        loss = self.logit_step(xb, yb, n_new, lambda out, y, n: L.cross_entropy(out, y), penalty)
        after = self._weights()
        for k, g in grads.items():
            if torch.isfinite(g).all():
                self.omega[k] -= g * (after[k] - before[k])
        return loss

    def after_training(self, x, y) -> None:
        end = self._weights()
        if self.omega is None:  # no step was trained
            return
        new = {k: self.omega[k] / ((end[k] - self.w_start[k]) ** 2 + self.options["eps"]) for k in end}
        self.importance = new if self.importance is None else {k: self.importance[k] + new[k] for k in new}
        self.anchor = end
        self.omega = self.w_start = None

    def footprint(self, base: dict) -> dict:
        n = self.n_params()
        base = dict(base, si_importance=4 * n, si_anchor=4 * n, si_omega=4 * n, si_start_weights=4 * n)
        base["total"] = sum(v for k, v in base.items() if k != "total")
        return base

    def event_extra(self) -> dict:
        n = self.n_params()
        return self.extra(16 * n, 5 * n, 16 * n, 0,
                          "the modelled event trains the back; SI also adds the penalty gradient and updates omega "
                          "(reading importance, anchor, omega and the old weights) at every step")

    def state_dict(self) -> dict:
        return {"importance": self.importance, "anchor": self.anchor}

    def load_state_dict(self, sd: dict) -> None:
        self.importance, self.anchor = sd.get("importance"), sd.get("anchor")
