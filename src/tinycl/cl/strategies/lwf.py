"""``lwf``: Learning without Forgetting (Li & Hoiem 2017), class-incremental as Avalanche's ``LwF``.

Memory: a copy of the back as it was after the previous experience (the teacher). Loss of a
step: ``CE(all) + alpha * KL(softmax(teacher / T) || softmax(back / T))`` over the output units
of the classes seen before this experience (:func:`tinycl.cl.losses.distillation`). No replay.
Extra state: the teacher's weights (weight format) and float buffers (fp32). Extra work: the
teacher's forward of every training sample.
"""

import torch

from .. import losses as L
from ...models.convert import from_graph
from .base import Strategy, register


def lwf_loss(out, y, teacher, units, alpha: float, temperature: float):
    """``CE(out, y) + alpha * distillation(out, teacher, units, T)``; value and dL/dlogits."""
    v, g = L.cross_entropy(out, y)
    vd, gd = L.distillation(out, teacher, units, temperature)
    return v + alpha * vd, g + alpha * gd


@register
class LwF(Strategy):
    name = "lwf"
    OPTIONS = {"alpha": 1.0, "temperature": 2.0}

    def start(self, first_latents) -> None:
        self.teacher = None

    def _make_teacher(self, sd: dict):
        t = from_graph(self.run.setup.back, precision=self.cfg["precision"]).eval()
        t.generator = torch.Generator().manual_seed(self.cfg["seed"])
        t.load_state_dict(sd)
        return t

    def step(self, xb, yb, n_new):
        if self.teacher is None:
            return self.run.learner.train_step(xb, yb, n_new)
        units = torch.tensor(self.seen_before(self.run.i), dtype=torch.long)
        with torch.no_grad():
            old = self.teacher.predict(xb)
        a, t = self.options["alpha"], self.options["temperature"]
        return self.logit_step(xb, yb, n_new, lambda out, y, n: lwf_loss(out, y, old, units, a, t))

    def after_training(self, x, y) -> None:
        self.teacher = self._make_teacher(self.run.learner.net.state_dict())

    def extra_macs(self, trained: int, new: int) -> int:
        return trained * self.run.back_macs["forward"] if self.run.i > 0 else 0

    def footprint(self, base: dict) -> dict:
        base = dict(base, lwf_teacher=self.back_state_bytes())
        base["total"] = sum(v for k, v in base.items() if k != "total")
        return base

    def event_extra(self) -> dict:
        k = self.run.setup.dataset.num_classes
        return self.extra(self.back_state_bytes(), self.run.back_macs["forward"] * self.cfg["batch_size"]
                          + 4 * k * self.cfg["batch_size"], self.back_state_bytes(), 0,
                          "the modelled event trains the back; LwF also runs the teacher (a copy of the back) "
                          "forward on every sample of a step and reads its weights")

    def state_dict(self) -> dict:
        return {"teacher": self.teacher.state_dict() if self.teacher is not None else None}

    def load_state_dict(self, sd: dict) -> None:
        if sd.get("teacher") is not None:
            self.teacher = self._make_teacher(sd["teacher"])
