"""``ewc``: online Elastic Weight Consolidation (Kirkpatrick et al. 2017; Schwarz et al. 2018).

After each experience the importance of every back parameter is the mean, over the experience's
minibatches (``batch_size`` new samples, no shuffling), of its squared cross-entropy gradient
(as Avalanche's ``EWCPlugin``); it is added to the running importance after multiplying that by
``decay`` (1: a plain sum), and the anchor becomes the weights at the end of the experience.
Step loss: ``CE + (lambda / 2) * sum(F * (w - anchor)**2)``. The Fisher pass restores the batch
norm running statistics it touches. Extra state: importance and anchor, fp32, 8 bytes per
parameter. Extra work: 3 operations per parameter per step (the penalty gradient); a forward
and weight-gradient pass over each experience's samples (the Fisher).
"""

import torch

from .. import losses as L
from .base import Strategy, register


@register
class EWC(Strategy):
    name = "ewc"
    OPTIONS = {"lambda": 100.0, "decay": 1.0}

    def start(self, first_latents) -> None:
        self.importance = self.anchor = None

    def penalty(self):
        net = self.run.learner.net
        return L.quadratic_penalty(net.named_parameters(), self.importance, self.anchor, self.options["lambda"] / 2)

    def step(self, xb, yb, n_new):
        if self.importance is None:
            return self.run.learner.train_step(xb, yb, n_new)
        return self.logit_step(xb, yb, n_new, lambda out, y, n: L.cross_entropy(out, y), self.penalty)

    def after_training(self, x, y) -> None:
        fisher = fisher_diagonal(self.run.learner.net, x, y, self.cfg["batch_size"])
        d = self.options["decay"]
        self.importance = fisher if self.importance is None else {
            k: d * self.importance[k] + fisher[k] for k in fisher}
        self.anchor = {k: w.detach().float().clone() for k, w in self.run.learner.net.named_parameters().items()}

    def extra_macs(self, trained: int, new: int) -> int:
        m = self.run.back_macs
        return new * (m["forward"] + m["backward_input"] + m["backward_weight"])

    def footprint(self, base: dict) -> dict:
        base = dict(base, ewc_importance=4 * self.n_params(), ewc_anchor=4 * self.n_params())
        base["total"] = sum(v for k, v in base.items() if k != "total")
        return base

    def event_extra(self) -> dict:
        m = self.run.back_macs
        return self.extra(8 * self.n_params(), 3 * self.n_params(), 8 * self.n_params(),
                          m["forward"] + m["backward_input"] + m["backward_weight"],
                          "the modelled event trains the back; EWC also reads importance and anchor and adds the "
                          "penalty gradient at every step, and runs one Fisher pass over the new samples")

    def state_dict(self) -> dict:
        return {"importance": self.importance, "anchor": self.anchor}

    def load_state_dict(self, sd: dict) -> None:
        self.importance, self.anchor = sd.get("importance"), sd.get("anchor")


def fisher_diagonal(net, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> dict:
    """Mean over minibatches of squared gradients of the mean cross-entropy (fp32 per parameter).

    Batches whose gradients are not finite (an fp16 overflow) are left out. The network's
    buffers (batch-norm running statistics) are restored afterwards.
    """
    buffers = {k: b.clone() for k, b in net.root.named_buffers()}
    fisher = {k: torch.zeros(w.shape, dtype=torch.float32) for k, w in net.named_parameters().items()}
    used = 0
    net.train()
    for a in range(0, len(x), batch_size):
        xb, yb = x[a:a + batch_size].float(), y[a:a + batch_size]
        if len(xb) < 2 and any(b.dtype.is_floating_point for b in buffers.values()):
            continue  # batch statistics need 2 samples
        net.zero_grad()
        out = net.forward(xb)
        _, g = L.cross_entropy(out, yb)
        scale = net.scaler.scale if net.scaler is not None else 1.0
        net.backward(g * scale if scale != 1.0 else g, need_input=False)
        grads = net.named_grads()
        if all(torch.isfinite(v).all() for v in grads.values()):
            for k, v in grads.items():
                fisher[k] += v.float() ** 2
            used += 1
    net.zero_grad()
    for k, b in net.root.named_buffers():
        b.copy_(buffers[k])
    return {k: v / max(used, 1) for k, v in fisher.items()}
