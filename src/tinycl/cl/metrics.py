"""Continual-learning metrics: accuracy matrix, average accuracy, forgetting, backward transfer,
and a per-experience log of wall time (seconds), training MACs and replay memory (bytes).

Definitions (T experiences, R[i][j] = accuracy on experience j's test set after training on
experience i, a fraction in [0, 1]; NaN where not measured, e.g. j > i or an empty test set):
    average accuracy after i   mean of R[i][j] over j <= i (NaN entries skipped)
    seen-class accuracy after i  correct / total over the test sets 0..i pooled, i.e. the accuracy on
                               every test sample of the classes seen so far (tinycl's test sets
                               are disjoint, see tinycl.data.stream)
    forgetting of j (j < T-1)  max over i in [j, T-2] of R[i][j], minus R[T-1][j]   (Mammoth style;
                               Avalanche uses R[j][j] - R[T-1][j] instead)
    forgetting                 mean of forgetting of j over j < T-1
    BWT                        mean over j < T-1 of R[T-1][j] - R[j][j]   (Lopez-Paz & Ranzato 2017)
Experiences whose entries are NaN are left out of these means.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from tinycl.errors import TinyclError


class AccuracyMatrix:
    """R[i][j] from counts of correct predictions; `record(i, j, correct, total)` fills a cell."""

    def __init__(self, n_experiences: int):
        if n_experiences < 1:
            raise TinyclError(f"n_experiences must be >= 1, got {n_experiences}")
        self.n = n_experiences
        self.correct = np.zeros((n_experiences, n_experiences), dtype=np.int64)
        self.total = np.zeros((n_experiences, n_experiences), dtype=np.int64)

    def record(self, after: int, on: int, correct: int, total: int) -> None:
        """Store the result of testing on experience `on` after training on experience `after`."""
        if not (0 <= after < self.n and 0 <= on < self.n):
            raise TinyclError(f"experience index out of range 0..{self.n - 1}: after={after}, on={on}")
        if not 0 <= correct <= total:
            raise TinyclError(f"need 0 <= correct <= total, got {correct}/{total}")
        self.correct[after, on] = correct
        self.total[after, on] = total

    @property
    def matrix(self) -> np.ndarray:
        """T x T float64 accuracies in [0, 1], NaN where nothing was recorded."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.total > 0, self.correct / np.maximum(self.total, 1), np.nan)

    def seen_accuracy(self) -> np.ndarray:
        """Per row i: pooled accuracy over the test sets of experiences 0..i (NaN if none)."""
        tri = np.tril(np.ones((self.n, self.n), dtype=bool))
        c = np.where(tri, self.correct, 0).sum(1)
        t = np.where(tri, self.total, 0).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(t > 0, c / np.maximum(t, 1), np.nan)

    def summary(self) -> dict:
        """Plain-number summary (JSON-ready; NaN becomes None)."""
        r = self.matrix
        seen = self.seen_accuracy()
        forg = forgetting(r)
        return _clean({
            "accuracy_matrix": r.tolist(),
            "average_accuracy": average_accuracy(r).tolist(),
            "seen_class_accuracy": seen.tolist(),
            "final_average_accuracy": float(average_accuracy(r)[-1]),
            "final_seen_class_accuracy": float(seen[-1]),
            "forgetting": forg[1],
            "forgetting_per_experience": forg[0].tolist(),
            "bwt": bwt(r),
        })


def _as_matrix(r) -> np.ndarray:
    r = np.asarray(r, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] != r.shape[1] or r.shape[0] < 1:
        raise TinyclError(f"accuracy matrix must be square T x T, got shape {r.shape}")
    return r


def _nanmean(a) -> float:
    a = np.asarray(a, dtype=np.float64)
    a = a[~np.isnan(a)]
    return float(a.mean()) if a.size else float("nan")


def average_accuracy(r) -> np.ndarray:
    """Per experience i: mean of R[i][j] over j <= i, NaN skipped. The last entry is the final one."""
    r = _as_matrix(r)
    return np.array([_nanmean(r[i, :i + 1]) for i in range(r.shape[0])])


def forgetting(r) -> tuple[np.ndarray, float]:
    """Mammoth-style forgetting: per j < T-1, max over i in [j, T-2] of R[i][j] minus R[T-1][j];
    and its mean over j < T-1. NaN for a single experience or unmeasured columns."""
    r = _as_matrix(r)
    t = r.shape[0]
    per = np.full(max(t - 1, 0), np.nan)
    for j in range(t - 1):
        col = r[j:t - 1, j]
        col = col[~np.isnan(col)]
        if col.size and not np.isnan(r[t - 1, j]):
            per[j] = col.max() - r[t - 1, j]
    return per, _nanmean(per)


def bwt(r) -> float:
    """Backward transfer: mean over j < T-1 of R[T-1][j] - R[j][j] (negative = forgetting)."""
    r = _as_matrix(r)
    t = r.shape[0]
    return _nanmean([r[t - 1, j] - r[j, j] for j in range(t - 1)])


def _clean(obj):
    if isinstance(obj, float):
        return None if np.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


@dataclass
class ExperienceRecord:
    """What one experience cost: seconds of wall time, training MACs, replay memory bytes."""

    experience: int
    seconds: float
    train_macs: int = 0
    replay_bytes: int = 0


@dataclass
class ExperienceLog:
    """Per-experience costs. Use `with log.time(i) as rec: ...; rec.train_macs = ...`."""

    records: list[ExperienceRecord] = field(default_factory=list)

    def time(self, experience: int) -> "_Timer":
        return _Timer(self, experience)

    def add(self, experience: int, seconds: float, train_macs: int = 0, replay_bytes: int = 0) -> None:
        self.records.append(ExperienceRecord(experience, float(seconds), int(train_macs), int(replay_bytes)))

    @property
    def total_seconds(self) -> float:
        return float(sum(r.seconds for r in self.records))

    @property
    def total_macs(self) -> int:
        return int(sum(r.train_macs for r in self.records))

    def to_list(self) -> list[dict]:
        return [asdict(r) for r in self.records]


class _Timer:
    """Context manager that measures wall time (time.perf_counter, seconds) into a record."""

    def __init__(self, log: ExperienceLog, experience: int):
        self.log, self.record = log, ExperienceRecord(experience, 0.0)

    def __enter__(self) -> ExperienceRecord:
        self._t0 = time.perf_counter()
        return self.record

    def __exit__(self, *exc) -> None:
        self.record.seconds = time.perf_counter() - self._t0
        self.log.records.append(self.record)
