"""``derpp``: DER++ (Buzzega et al. 2020): replay latents with the logits the back gave them.

Each slot of the latent memory (``n_replays`` slots at ``lr_bits``) also keeps the back's
logits for that sample, computed after the experience that stored it (as Avalanche's DER),
quantized like the latents: ``lr_bits`` per logit, one fp32 scale and zero point for all
(per-tensor min-max, calibrated on the first experience's logits). Loss of a step::

    CE(new) + alpha * MSE(logits of replayed, stored logits) + beta * CE(replayed)

(one replay batch for both terms, as Avalanche). Extra state: the logit rows; extra work: one
forward of the back over each experience's samples to store their logits. With ``replay: raw``
the memory keeps uint8 images (raw replay's bytes and slots) and the logits of the same slots;
a replayed image runs the front again.
"""

import torch

from .. import losses as L
from ..memory import ReplayMemory
from ..replay import CALIBRATION
from ...numerics.latent_quant import LatentQuantizer
from ...numerics.packing import row_nbytes
from .base import register
from .latent_replay import LatentReplay


def derpp_loss(out, y, n_new, stored, alpha: float, beta: float):
    """DER++ on a batch whose first ``n_new`` samples are new and the rest replayed with ``stored``
    logits: ``CE(new) + alpha * MSE(replayed, stored) + beta * CE(replayed)``; value and dL/dlogits."""
    if n_new == len(y):
        return L.cross_entropy(out, y)
    grad = out.new_zeros(out.shape)
    value = out.new_zeros(())
    if n_new:
        value, grad[:n_new] = L.cross_entropy(out[:n_new], y[:n_new])
    vm, gm = L.logit_mse(out[n_new:], stored)
    vc, gc = L.cross_entropy(out[n_new:], y[n_new:])
    grad[n_new:] = alpha * gm + beta * gc
    return value + alpha * vm + beta * vc, grad


@register
class DERPP(LatentReplay):
    name = "derpp"
    replays_per_step = True
    OPTIONS = {"alpha": 0.1, "beta": 0.5}
    raw_ok = True

    def start(self, first_latents) -> None:
        super().start(first_latents)
        self.logits: ReplayMemory | None = None  # same capacity, policy and seed: the same slots
        self._stored = None  # the logits of the replay batch of the current step

    def _logit_memory(self, calib: torch.Tensor) -> ReplayMemory:
        q = LatentQuantizer(self.cfg["lr_bits"], "tensor", "minmax", seed=self.cfg["seed"]).fit(calib[:CALIBRATION])
        m = self.memory
        return ReplayMemory(m.capacity, q, m.policy, seed=m.seed)

    def replay_fn(self):
        if not len(self.memory):
            return None

        def replay(n):
            idx = self.memory.sample_index(n, self.run.gen)
            x, y = self.memory.rows(idx)
            self._stored = self.logits.rows(idx)[0]
            return self.latents(x), y
        return replay

    def step(self, xb, yb, n_new):
        a, b = self.options["alpha"], self.options["beta"]
        stored, self._stored = self._stored, None
        return self.logit_step(xb, yb, n_new, lambda out, y, n: derpp_loss(out, y, n, stored, a, b))

    def store(self, x, y) -> None:
        logits = self.run.learner.net.predict(x.float())
        if self.logits is None:
            self.logits = self._logit_memory(logits)
        self.memory.add(self.payload(x), y, self.run.i)
        self.logits.add(logits, y, self.run.i)

    def _logit_row(self) -> tuple[int, int]:
        """(bytes of one stored logit row, bytes of the logit quantizer's metadata)."""
        k = self.run.setup.dataset.num_classes
        lq = LatentQuantizer(self.cfg["lr_bits"], "tensor")
        return (k * (lq.storage_bits // 8), 0) if lq.is_float else (row_nbytes(k, lq.bits), 8)

    def memory_bytes(self, allocated: bool = False) -> dict:
        out = dict(self.memory.nbytes(allocated=allocated))
        row, meta = self._logit_row()
        out["logits"] = (self.memory.capacity if allocated else len(self.memory)) * row
        out["logit_metadata"] = meta if (allocated or self.logits is not None) else 0
        out["total"] = sum(v for key, v in out.items() if key != "total")
        return out

    def extra_macs(self, trained: int, new: int) -> int:
        return new * self.run.back_macs["forward"] + self.replayed_front_macs(trained, new)  # + stored logits

    def event_extra(self) -> dict:
        row, meta = self._logit_row()
        k = self.run.setup.dataset.num_classes
        return self.raw_event_extra(self.extra(
            self.memory.capacity * row + meta, 3 * k * self.cfg["replay_batch"], row * self.cfg["replay_batch"],
            self.run.back_macs["forward"], "the modelled event replays latents; DER++ also reads each replayed "
            "sample's stored logits (MSE on them) and runs the back forward once per new sample to store its logits"))

    def state_dict(self) -> dict:
        return {"logits": self.logits.state_dict() if self.logits is not None else None}

    def load_state_dict(self, sd: dict) -> None:
        if sd.get("logits") is not None:
            self.logits = ReplayMemory.from_state_dict(sd["logits"])
