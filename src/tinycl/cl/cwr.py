"""CWR* (Lomonaco et al.; AR1*): a consolidated output layer for class-incremental learning.

Before an experience, the output layer's rows are zeroed except those of the classes
present in it, which get their consolidated values. After it, each present class's
trained row, centred by the mean over present classes, is merged into its consolidated
row with weight sqrt(past / current) for the samples seen before. Evaluation uses the
consolidated rows. Rows are weight rows and bias entries of the network's last Linear.
"""

from __future__ import annotations

import math

import torch


class CWRStar:
    def __init__(self, net):
        linear = [layer for layer in net.layers() if layer.kind == "linear"]
        self.layer = linear[-1]
        w = self.layer.params["weight"].value
        self.saved = torch.zeros_like(w)
        self.saved_b = torch.zeros(w.shape[0], dtype=w.dtype)
        self.past = torch.zeros(w.shape[0], dtype=torch.float64)
        self.cur: dict[int, int] = {}

    def _set(self, w, b):
        self.layer.params["weight"].set(w)
        if "bias" in self.layer.params:
            self.layer.params["bias"].set(b)

    def before_experience(self, labels: torch.Tensor) -> None:
        """Zero all rows, load consolidated rows of the classes in ``labels`` (new data only)."""
        cls, counts = labels.unique(return_counts=True)
        self.cur = dict(zip(cls.tolist(), counts.tolist()))
        w = torch.zeros_like(self.saved)
        b = torch.zeros_like(self.saved_b)
        idx = cls.long()
        w[idx], b[idx] = self.saved[idx], self.saved_b[idx]
        self._set(w, b)

    def after_experience(self) -> None:
        """Merge the trained rows of the present classes into the consolidated ones."""
        w = self.layer.params["weight"].value
        b = self.layer.params["bias"].value if "bias" in self.layer.params else torch.zeros_like(self.saved_b)
        idx = torch.tensor(sorted(self.cur))
        w_avg, b_avg = w[idx].mean(), b[idx].mean()
        for c, n in self.cur.items():
            new_w, new_b = w[c] - w_avg, b[c] - b_avg
            if self.past[c] > 0:
                k = math.sqrt(self.past[c] / n)
                self.saved[c] = (self.saved[c] * k + new_w) / (k + 1)
                self.saved_b[c] = (self.saved_b[c] * k + new_b) / (k + 1)
            else:
                self.saved[c], self.saved_b[c] = new_w, new_b
            self.past[c] += n
        self.use_consolidated()

    def use_consolidated(self) -> None:
        """Evaluation: every class seen so far uses its consolidated row."""
        seen = self.past > 0
        w = self.layer.params["weight"].value.clone()
        b = (self.layer.params["bias"].value if "bias" in self.layer.params else self.saved_b).clone()
        w[seen], b[seen] = self.saved[seen], self.saved_b[seen]
        self._set(w, b)

    def state_dict(self) -> dict:
        return {"saved": self.saved, "saved_b": self.saved_b, "past": self.past}

    def load_state_dict(self, sd: dict) -> None:
        self.saved, self.saved_b, self.past = sd["saved"].clone(), sd["saved_b"].clone(), sd["past"].clone()
