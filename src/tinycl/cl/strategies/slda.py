"""``slda``: Deep Streaming LDA (Hayes & Kanan 2020) on the channels of the latents (the back is not trained).

Features: each latent (C x H x W, dequantized) is average-pooled over its positions to its C
channels (D = C values); the paper runs SLDA on pooled features of a frozen network, and
pooling keeps the covariance small (D x D instead of (C H W)^2). A latent that is already a
vector is used as it is.

Learning, one sample at a time (``x`` its D features, ``y`` its label, ``c_y`` that class's
count so far, ``n`` all samples so far)::

    d = x - mu_y
    Sigma = (n * Sigma + c_y / (c_y + 1) * d d^T) / (n + 1)
    mu_y += d / (c_y + 1);  c_y += 1;  n += 1

so ``Sigma`` is exactly the pooled within-class covariance (maximum likelihood, / n) of all the
samples seen, and ``mu`` their class means: a stream gives the same head as a batch LDA fit.
(The paper's code weights ``d d^T`` by ``n / (n + 1)`` instead, with the global count, which
adds ``x x^T`` for the first sample of every class; this is the exact form.)

Prediction: ``Lambda = ((1 - s) Sigma + s I)^-1`` (``shrinkage`` s, default 1e-4), the LDA
linear classifier ``W = Lambda mu^T``, ``b_k = -mu_k . W_k / 2``, and the class of the largest
``x W + b`` among the classes seen so far (``0 < s <= 1`` keeps the shrunk covariance positive
definite, so its Cholesky factor exists). One pass over each experience: ``epochs``,
``precision`` and the learning rate do not apply; ``cwr`` is refused.

Device memory, fp32 (computed in float64 here): means ``4 K D``, counts ``4 (K + 1)``, the
covariance ``4 D (D + 1) / 2`` (symmetric: one triangle), the classifier ``4 (K D + K)`` and the
Cholesky factor used to recompute it after each experience ``4 D (D + 1) / 2``. A feature
dimension whose covariance would exceed ``MAX_COVARIANCE_BYTES`` is refused.
"""

import torch

from ...errors import TinyclError
from .base import Strategy, register

MAX_COVARIANCE_BYTES = 64 * 2 ** 20  # fp32 D x D (D = 4096)


def pool(latents: torch.Tensor) -> torch.Tensor:
    """SLDA's features: latents (N, C, ...) averaged over their positions to (N, C), float64."""
    x = latents.double()
    return x.reshape(len(x), x.shape[1], -1).mean(2) if x.dim() > 2 else x


def lda_classifier(means: torch.Tensor, cov: torch.Tensor, shrinkage: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (D x K), b (K)) of the LDA classifier of class ``means`` (K x D) and shared ``cov`` (D x D)."""
    d = cov.shape[0]
    reg = (1 - shrinkage) * cov + shrinkage * torch.eye(d, dtype=cov.dtype)
    w = torch.cholesky_solve(means.T, torch.linalg.cholesky(reg))
    return w, -0.5 * (means.T * w).sum(0)


@register
class SLDA(Strategy):
    name = "slda"
    trains_back = False
    OPTIONS = {"shrinkage": 1e-4}

    @classmethod
    def check_own_options(cls, options: dict) -> None:
        if not 0 < options.get("shrinkage", 1e-4) <= 1:  # > 0: the shrunk covariance is positive definite
            raise TinyclError(f"config: strategy option 'shrinkage' must be in (0, 1], got {options['shrinkage']!r}")

    def start(self, first_latents) -> None:
        shape = self.run.setup.latent_shape
        d, k = shape[0], self.run.setup.dataset.num_classes
        if 4 * d * d > MAX_COVARIANCE_BYTES:
            raise TinyclError(f"strategy slda: the pooled latent has {d} channels; its covariance ({d} x {d}, "
                              f"{4 * d * d / 2 ** 20:.0f} MiB in fp32) is above {MAX_COVARIANCE_BYTES // 2 ** 20} "
                              f"MiB; choose a latent layer with fewer channels")
        self.means = torch.zeros(k, d, dtype=torch.float64)
        self.counts = torch.zeros(k, dtype=torch.int64)
        self.cov = torch.zeros(d, d, dtype=torch.float64)
        self._head = None  # (seen classes, W, b), recomputed when the counts change

    @property
    def seen_total(self) -> int:
        return int(self.counts.sum())

    def fit(self, feats: torch.Tensor, labels: torch.Tensor) -> None:
        """The streaming update (module doc), one sample at a time."""
        means, counts, cov = self.means, self.counts, self.cov
        n = self.seen_total
        for x, y in zip(feats, labels.tolist()):
            c = int(counts[y])
            d = x - means[y]
            cov.mul_(n / (n + 1)).add_(torch.outer(d, d), alpha=c / ((c + 1) * (n + 1)))
            means[y].add_(d, alpha=1 / (c + 1))
            counts[y] += 1
            n += 1
        self._head = None

    def train(self, x, y) -> None:
        self.fit(pool(x), y)

    def head(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(seen classes, W, b) of the current LDA classifier."""
        if self._head is None:
            seen = torch.nonzero(self.counts > 0).flatten()
            w, b = lda_classifier(self.means[seen], self.cov, self.options["shrinkage"])
            self._head = (seen, w, b)
        return self._head

    @torch.no_grad()
    def predict(self, latents: torch.Tensor) -> torch.Tensor:
        if len(latents) == 0 or self.seen_total == 0:
            return torch.zeros(len(latents), dtype=torch.long)
        seen, w, b = self.head()
        return seen[(pool(latents) @ w + b).argmax(1)]

    def _sizes(self) -> tuple[int, int, int]:
        """(K classes, D features, latent values per sample)."""
        k, d = self.means.shape
        return k, d, int(torch.tensor(self.run.setup.latent_shape).prod())

    def footprint(self, base: dict) -> dict:
        k, d, flat = self._sizes()
        tri = d * (d + 1) // 2
        out = {key: 0 for key in base}
        out.update(front_weights=base["front_weights"], latent_batch=self.cfg["batch_size"] * flat * 4,
                   slda_means=4 * k * d, slda_counts=4 * (k + 1), slda_covariance=4 * tri,
                   slda_classifier=4 * (k * d + k), slda_cholesky=4 * tri)
        out["total"] = sum(v for key, v in out.items() if key != "total")
        return out

    def _per_sample_macs(self) -> int:
        k, d, flat = self._sizes()
        return flat + 2 * d + d * (d + 1) // 2  # pooling, mean update, covariance triangle update

    def extra_macs(self, trained: int, new: int) -> int:
        k, d, _ = self._sizes()
        refresh = d ** 3 // 6 + k * d * d + k * d  # Cholesky, two triangular solves per class, biases
        return new * self._per_sample_macs() + refresh

    def event_extra(self) -> dict:
        k, d, flat = self._sizes()
        tri = d * (d + 1) // 2
        return self.extra(4 * (k * d + k + 1 + 2 * tri + k * d + k), 0, 0, self._per_sample_macs(),
                          f"the back is not trained: a learning event is the front's forward, pooling to D = {d} "
                          f"channels and the mean and covariance update; after an experience the classifier is "
                          f"recomputed (about D^3/6 + K D^2 MACs); prediction is {k} x {d} MACs per sample")

    def state_dict(self) -> dict:
        return {"means": self.means, "counts": self.counts, "cov": self.cov}

    def load_state_dict(self, sd: dict) -> None:
        if sd.get("means") is not None:
            self.means, self.counts, self.cov = sd["means"].clone(), sd["counts"].clone(), sd["cov"].clone()
            self._head = None
