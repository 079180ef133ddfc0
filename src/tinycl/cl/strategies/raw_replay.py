"""``raw_replay``: replay raw uint8 inputs through the (INT8) front, in the bytes of latent replay.

The memory gets the bytes a full latent memory of ``n_replays`` slots would hold
(:func:`tinycl.cl.replay.raw_memory`); every replayed image runs the front again.
"""

import math

import torch

from ..backbone import to_input
from ..replay import raw_memory
from .base import register
from .latent_replay import LatentReplay


BATCH = 256  # images per front call when the memory's latents are computed at once
CACHE_BYTES = 1 << 30  # at most this many bytes of float32 latents for the whole memory; else per step


@register
class RawReplay(LatentReplay):
    name = "raw_replay"
    replays_per_step = True
    quantize_new = False

    def start(self, first_latents) -> None:
        self.memory = raw_memory(self.cfg, self.run.setup, first_latents)

    def replay_fn(self):
        if not len(self.memory):
            return None
        s = self.run.setup
        if self.cfg["front_int8"] and self.memory.capacity * math.prod(s.latent_shape) * 4 <= CACHE_BYTES:
            return self._cached_replay()

        def replay(n):
            raw, ry = self.memory.sample(n, self.run.gen)
            return s.front(to_input(raw.round().clamp(0, 255).to(torch.uint8), s.mean, s.std)), ry
        return replay

    def _cached_replay(self):
        """The INT8 front over the whole memory once per experience, in batches; each step then
        gathers its replays. The memory does not change while an experience trains and the INT8
        front gives the same codes at any batch, so the replays are the same, bit for bit, as the
        front run on each step's draw (the same draws from the run's generator)."""
        s = self.run.setup
        raw, labels, _ = self.memory.tensors()
        images = raw.round().clamp(0, 255).to(torch.uint8)
        latents = torch.cat([s.front(to_input(images[i:i + BATCH], s.mean, s.std))
                             for i in range(0, len(images), BATCH)])

        def replay(n):
            idx = self.memory.sample_index(n, self.run.gen)
            return latents[idx], labels[idx]
        return replay

    def store(self, x, y) -> None:
        self.memory.add(self.run.setup.dataset.train.x[self.run.idx].float(), y, self.run.i)
