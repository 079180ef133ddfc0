"""``latent_replay``: replay quantized latents (AR1*-style memory, Pellegrini et al. 2020).

Each step trains on ``batch_size`` new latents and ``replay_batch`` latents drawn from a
memory of ``n_replays`` slots at ``lr_bits`` (:mod:`tinycl.cl.replay`). The experience's
latents are offered to the memory after its training.

:class:`Stored` is the memory side shared by the strategies that keep samples (latent
replay, raw replay, DER++, ER-ACE, GDumb): with ``replay: raw`` (derpp, er_ace, gdumb; always
for raw_replay) the memory keeps the uint8 input images instead, in the bytes of a full
latent memory (:func:`tinycl.cl.replay.raw_memory`), and every image taken from it runs the
front again.
"""

import math

import torch

from ..backbone import to_input
from ..memory import ReplayMemory
from ..replay import latent_memory, raw_memory
from .base import Strategy, register

FRONT_CHUNK = 256  # images per front call when a whole raw memory goes through the front
CACHE_BYTES = 1 << 30  # raw replay: at most this many bytes of float32 latents of the whole memory; else per step


class Stored:
    """The replay memory of a strategy: latents at ``lr_bits``, or raw images (``replay: raw``)."""

    raw_ok = False  # accepts ``replay: raw``

    @property
    def raw(self) -> bool:
        return self.cfg.get("replay") == "raw"

    def new_memory(self, first_latents: torch.Tensor, policy: str | None = None) -> ReplayMemory:
        if self.raw:
            return raw_memory(self.cfg, self.run.setup, first_latents, policy)
        return latent_memory(self.cfg, first_latents, policy)

    def payload(self, x: torch.Tensor) -> torch.Tensor:
        """What the memory stores for the experience's new latents ``x``: them, or their images."""
        return self.run.setup.dataset.train.x[self.run.idx].float() if self.raw else x

    @torch.no_grad()
    def latents(self, rows: torch.Tensor) -> torch.Tensor:
        """Samples as the memory returns them -> latents (raw images run the front)."""
        if not self.raw:
            return rows
        s = self.run.setup
        out = [s.front(to_input(rows[a:a + FRONT_CHUNK].round().clamp(0, 255).to(torch.uint8), s.mean, s.std))
               for a in range(0, len(rows), FRONT_CHUNK)]
        return torch.cat(out) if out else rows.new_zeros((0, *s.latent_shape))

    def replayed_front_macs(self, trained: int, new: int) -> int:
        """Front MACs of the images replayed in an experience (0 for a latent memory): each new
        sample is trained once per epoch, the rest of the trained samples were replayed."""
        return max(trained - self.cfg["epochs"] * new, 0) * self.run.front_macs if self.raw else 0

    def raw_event_extra(self, extra: dict) -> dict:
        """``extra`` (an :meth:`Strategy.extra`) with the front forward of every replayed image added."""
        if not self.raw:
            return extra
        f = self.run.front_macs
        extra = dict(extra, extra_ops_per_step=extra["extra_ops_per_step"] + f * self.cfg["replay_batch"])
        extra["note"] += f"; raw replay: each replayed image runs the front again ({f} MACs, in extra_ops_per_step)"
        return extra


@register
class LatentReplay(Stored, Strategy):
    name = "latent_replay"
    replays_per_step = True
    quantize_new = True

    def start(self, first_latents) -> None:
        self.memory = self.new_memory(first_latents)

    def replay_fn(self):
        if self.memory is None or not len(self.memory):
            return None
        if self.raw and self.cfg["front_int8"] and \
                self.memory.capacity * math.prod(self.run.setup.latent_shape) * 4 <= CACHE_BYTES:
            return self._memory_through_front()

        def replay(n):
            x, y = self.memory.sample(n, self.run.gen)
            return self.latents(x), y
        return replay

    def _memory_through_front(self):
        """Raw replay: the INT8 front over the whole memory once per experience, in batches; each
        step then gathers its replays. The memory does not change while an experience trains and the
        INT8 front gives the same codes at any batch, so the replays are the same, bit for bit, as the
        front run on each step's draw (the same draws from the run's generator)."""
        rows, labels, _ = self.memory.tensors()
        latents = self.latents(rows)

        def replay(n):
            idx = self.memory.sample_index(n, self.run.gen)
            return latents[idx], labels[idx]
        return replay

    def after_training(self, x, y) -> None:
        self.store(x, y)

    def store(self, x, y) -> None:
        """Offer the experience's samples (latents or images) to the memory."""
        self.memory.add(self.payload(x), y, self.run.i)

    def extra_macs(self, trained: int, new: int) -> int:
        return self.replayed_front_macs(trained, new)

    def event_extra(self) -> dict | None:
        if not self.raw:
            return None
        return self.raw_event_extra(self.extra(0, 0, 0, 0, "replays raw images at the latent memory's bytes"))

    def state_dict(self) -> dict:
        return {}  # the memory is saved by the runner (state "memory")

    def load_memory(self, sd: dict) -> None:
        self.memory.load_state_dict(sd)


__all__ = ["LatentReplay", "ReplayMemory", "Stored"]
