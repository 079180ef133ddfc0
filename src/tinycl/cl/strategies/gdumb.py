"""``gdumb``: GDumb (Prabhu et al. 2020): a class-balanced memory, and a back retrained on it alone.

At each experience the new latents are offered to a class-balanced memory of ``n_replays``
slots at ``lr_bits`` (the config's ``replacement`` is not used); then the back is reset to its
weights at the start of the run (the backbone's; GDumb resets to a random init, a pretrained
front keeps its back here) with a fresh optimizer, and trained for ``epochs`` on the memory
only. With ``replay: raw`` the memory keeps uint8 images instead (raw replay's bytes, class
balanced), and the whole memory runs the front once per experience. Extra state: the initial
back (weight format; it may live in flash). Extra work: each experience trains on the memory's
samples instead of the new ones.
"""

from ...kernels.optim import SGD
from .base import Strategy, register
from .latent_replay import Stored


@register
class GDumb(Stored, Strategy):
    name = "gdumb"
    raw_ok = True

    def start(self, first_latents) -> None:
        self.memory = self.new_memory(first_latents, policy="class_balanced")
        self.initial = self.run.learner.net.state_dict()

    def train(self, x, y) -> None:
        c, learner = self.cfg, self.run.learner
        self.memory.add(self.payload(x), y, self.run.i)
        learner.net.load_state_dict(self.initial)
        learner.opt = SGD(lr=c["learning_rate"], momentum=c["momentum"], weight_decay=c["weight_decay"])
        mx, my, _ = self.memory.tensors()
        learner.train_experience(self.latents(mx), my, c["epochs"], c["batch_size"], None, 0, False, step=self.step,
                                 hooks=self.run.plugins)

    def extra_macs(self, trained: int, new: int) -> int:
        return len(self.memory) * self.run.front_macs if self.raw else 0  # the memory's images through the front

    def footprint(self, base: dict) -> dict:
        base = dict(base, gdumb_initial_back=self.back_state_bytes())
        base["total"] = sum(v for k, v in base.items() if k != "total")
        return base

    def event_extra(self) -> dict:
        note = ("a GDumb step trains on memory samples only (batch_size of them, no new ones); the modelled event "
                "prices batch_size + replay_batch samples per step, an upper bound")
        if self.raw:
            note += (f"; raw replay: the memory's images run the front once per experience ({self.run.front_macs} "
                     f"MACs each, in train_macs)")
        return self.extra(self.back_state_bytes(), 0, 0, 0, note)
