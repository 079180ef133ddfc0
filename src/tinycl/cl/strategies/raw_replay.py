"""``raw_replay``: replay raw uint8 inputs through the (INT8) front, in the bytes of latent replay.

The memory gets the bytes a full latent memory of ``n_replays`` slots would hold
(:func:`tinycl.cl.replay.raw_memory`); every replayed image runs the front again.
"""

import torch

from ..backbone import to_input
from ..replay import raw_memory
from .base import register
from .latent_replay import LatentReplay


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

        def replay(n):
            raw, ry = self.memory.sample(n, self.run.gen)
            return s.front(to_input(raw.round().clamp(0, 255).to(torch.uint8), s.mean, s.std)), ry
        return replay

    def store(self, x, y) -> None:
        self.memory.add(self.run.setup.dataset.train.x[self.run.idx].float(), y, self.run.i)
