"""``ncm``: a streaming nearest-class-mean head on the latents (the back is not trained).

Every new latent (flattened, D values) is added to its class's running sum; a test latent
gets the class whose mean is nearest (squared Euclidean distance; classes not seen yet are
never predicted). The means are exact running means: sums in fp32 on the device (float64
here), counts as int32. Nothing is replayed and the precision setting does not apply
(there is no training). Memory: ``K * D * 4 + K * 4`` bytes for K classes; work: D
additions per new sample, K * D MACs per prediction. The modelled learning event (which
trains the back) does not apply: ``learning_event`` is null and ``learning_event_extra``
gives the head's own work.
"""

import math

import torch

from .base import Strategy, register


@register
class NCM(Strategy):
    name = "ncm"
    trains_back = False

    def start(self, first_latents) -> None:
        k, d = self.run.setup.dataset.num_classes, math.prod(self.run.setup.latent_shape)
        self.sums = torch.zeros(k, d, dtype=torch.float64)
        self.counts = torch.zeros(k, dtype=torch.int64)

    def train(self, x, y) -> None:
        flat = x.reshape(len(x), -1).double()
        self.sums.index_add_(0, y, flat)
        self.counts += torch.bincount(y, minlength=len(self.counts))

    @torch.no_grad()
    def predict(self, latents: torch.Tensor) -> torch.Tensor:
        seen = torch.nonzero(self.counts > 0).flatten()
        if len(latents) == 0 or len(seen) == 0:
            return torch.zeros(len(latents), dtype=torch.long)
        means = (self.sums[seen] / self.counts[seen, None]).float()
        flat = latents.reshape(len(latents), -1).float()
        return seen[torch.cdist(flat, means).argmin(1)]

    def footprint(self, base: dict) -> dict:
        k, d = self.sums.shape
        out = {key: 0 for key in base}
        out.update(front_weights=base["front_weights"], latent_batch=self.cfg["batch_size"] * d * 4,
                   ncm_means=4 * k * d, ncm_counts=4 * k)
        out["total"] = sum(v for key, v in out.items() if key != "total")
        return out

    def extra_macs(self, trained: int, new: int) -> int:
        return new * self.sums.shape[1]  # one addition per latent value

    def event_extra(self) -> dict:
        k, d = self.sums.shape
        return self.extra(4 * k * d + 4 * k, 0, 0, d,
                          "the back is not trained: a learning event is the front's forward and D additions per "
                          f"new sample (D = {d}); prediction is {k} x {d} MACs per sample")

    def state_dict(self) -> dict:
        return {"sums": self.sums, "counts": self.counts}

    def load_state_dict(self, sd: dict) -> None:
        if sd.get("sums") is not None:
            self.sums, self.counts = sd["sums"].clone(), sd["counts"].clone()
