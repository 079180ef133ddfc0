"""``latent_replay``: replay quantized latents (AR1*-style memory, Pellegrini et al. 2020).

Each step trains on ``batch_size`` new latents and ``replay_batch`` latents drawn from a
memory of ``n_replays`` slots at ``lr_bits`` (:mod:`tinycl.cl.replay`). The experience's
latents are offered to the memory after its training.
"""

from ..memory import ReplayMemory
from ..replay import latent_memory
from .base import Strategy, register


@register
class LatentReplay(Strategy):
    name = "latent_replay"
    replays_per_step = True
    quantize_new = True

    def start(self, first_latents) -> None:
        self.memory = latent_memory(self.cfg, first_latents)

    def replay_fn(self):
        if self.memory is None or not len(self.memory):
            return None
        return lambda n: self.memory.sample(n, self.run.gen)

    def after_training(self, x, y) -> None:
        self.store(x, y)

    def store(self, x, y) -> None:
        """Offer the experience's samples to the memory (raw replay stores images instead)."""
        self.memory.add(x, y, self.run.i)

    def state_dict(self) -> dict:
        return {}  # the memory is saved by the runner (state "memory")

    def load_memory(self, sd: dict) -> None:
        self.memory.load_state_dict(sd)


__all__ = ["LatentReplay", "ReplayMemory"]
