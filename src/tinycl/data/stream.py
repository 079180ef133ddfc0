"""Continual-learning streams over a labelled Dataset: class-incremental and NICv2-style.

An experience names indices into dataset.train and dataset.test. Its test set holds the test
samples of the classes it introduces first (`new_classes`), so the test sets of a stream are
disjoint and, after experience i, the union of the test sets 0..i is the test set of every class
seen so far. An experience that introduces no class (NI/NIC batches of known classes) has an
empty test set; its column of the accuracy matrix stays NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tinycl.errors import TinyclError


@dataclass
class Experience:
    """One step of a stream.

    id: position in the stream (0, 1, ...).
    classes: sorted labels present in this experience's training data.
    new_classes: sorted labels that appear here for the first time.
    train_idx / test_idx: int64 indices into dataset.train / dataset.test.
    """

    id: int
    classes: list[int]
    new_classes: list[int]
    train_idx: torch.Tensor
    test_idx: torch.Tensor

    def __repr__(self) -> str:
        return (f"Experience({self.id}, classes={self.classes}, new={self.new_classes}, "
                f"train={len(self.train_idx)}, test={len(self.test_idx)})")


def _labels(split) -> np.ndarray:
    return split.y.numpy() if isinstance(split.y, torch.Tensor) else np.asarray(split.y)


def _class_order(num_classes: int, class_order, seed) -> list[int]:
    """The given order (checked), else a permutation of 0..n-1 drawn with `seed`
    (seed=None keeps 0..n-1)."""
    if class_order is None:
        if seed is None:
            return list(range(num_classes))
        return [int(c) for c in np.random.default_rng(seed).permutation(num_classes)]
    order = [int(c) for c in class_order]
    bad = [c for c in order if not 0 <= c < num_classes]
    if bad:
        raise TinyclError(f"class_order has labels outside 0..{num_classes - 1}: {bad[:5]}")
    if len(set(order)) != len(order):
        raise TinyclError(f"class_order repeats a class: {order}")
    if not order:
        raise TinyclError("class_order is empty")
    return order


def make_experience(exp_id: int, train_idx, test_y: np.ndarray, train_y: np.ndarray,
                    seen: set[int]) -> Experience:
    """Build an experience from its train indices; updates `seen` with its new classes."""
    train_idx = np.asarray(train_idx, dtype=np.int64)
    classes = sorted({int(c) for c in np.unique(train_y[train_idx])})
    new = [c for c in classes if c not in seen]
    seen.update(new)
    test_idx = np.flatnonzero(np.isin(test_y, new)) if new else np.zeros(0, np.int64)
    return Experience(exp_id, classes, new, torch.from_numpy(train_idx),
                      torch.from_numpy(test_idx.astype(np.int64)))


def class_incremental(dataset, initial_classes: int, classes_per_experience: int,
                      class_order=None, seed: int | None = 0) -> list[Experience]:
    """Class-incremental stream: first `initial_classes` classes, then `classes_per_experience`
    new classes per experience (the last one may hold fewer) until the order is used up.

    class_order: labels in the order they arrive (may be a subset of the classes); None draws
    a permutation with `seed` (seed=None keeps 0, 1, 2, ...). initial_classes=0 means the first
    experience is an ordinary increment. Train indices are sorted within an experience.
    """
    n = len(dataset.classes)
    order = _class_order(n, class_order, seed)
    if classes_per_experience < 1:
        raise TinyclError(f"classes_per_experience must be >= 1, got {classes_per_experience}")
    if not 0 <= initial_classes <= len(order):
        raise TinyclError(f"initial_classes must be in 0..{len(order)}, got {initial_classes}")
    groups = [order[:initial_classes]] if initial_classes else []
    rest = order[initial_classes:]
    groups += [rest[i:i + classes_per_experience] for i in range(0, len(rest), classes_per_experience)]
    train_y, test_y = _labels(dataset.train), _labels(dataset.test)
    seen: set[int] = set()
    stream = []
    for i, group in enumerate(groups):
        idx = np.flatnonzero(np.isin(train_y, group))
        if idx.size == 0:
            raise TinyclError(f"experience {i}: classes {group} have no training samples")
        stream.append(make_experience(i, idx, test_y, train_y, seen))
    return stream


def _chunk_counts(sizes: dict[int, int], initial: set[int], n_later: int) -> dict[int, int]:
    """How many later batches each class is cut into: every non-initial class at least one,
    the rest given one by one to the class whose pieces are largest (pieces of similar size).
    An initial class's first piece goes to batch 0 and counts as one of its pieces."""
    pieces = {c: 1 for c in sizes}
    later = {c: (0 if c in initial else 1) for c in sizes}
    spare = n_later - sum(later.values())
    for _ in range(spare):
        c = max(sizes, key=lambda k: (sizes[k] / pieces[k], -k))
        if sizes[c] <= pieces[c]:
            raise TinyclError(f"too many batches: classes cannot be cut into {n_later + 1} non-empty batches")
        pieces[c] += 1
        later[c] += 1
    return later


def nic_v2(dataset, n_batches: int, initial_classes: int, seed: int = 0,
           class_order=None) -> list[Experience]:
    """NICv2-style stream (new instances and classes, as CORe50 NICv2-79/196/391) for any data set.

    Batch 0 holds one piece of each of the `initial_classes` first classes of the order. Every
    later batch is one piece of one class: each class's (seed-shuffled) training samples are cut
    into nearly equal pieces, so pieces of already-seen classes come back again and again. New
    classes are introduced at evenly spaced batches in class order; the batches in between are
    drawn at random (with `seed`) from the remaining pieces of classes already introduced.
    Every training index appears in exactly one batch. Deterministic given seed and order.
    """
    train_y, test_y = _labels(dataset.train), _labels(dataset.test)
    order = _class_order(len(dataset.classes), class_order, seed)
    order = [c for c in order if np.any(train_y == c)]
    if not 1 <= initial_classes <= len(order):
        raise TinyclError(f"initial_classes must be in 1..{len(order)}, got {initial_classes}")
    new_later = order[initial_classes:]
    n_later = n_batches - 1
    if n_later < len(new_later):
        raise TinyclError(f"n_batches={n_batches} is too few: {len(new_later)} classes arrive after "
                          f"batch 0, each needs a batch (n_batches >= {len(new_later) + 1})")
    rng = np.random.default_rng(seed)
    initial = set(order[:initial_classes])
    sizes = {c: int(np.sum(train_y == c)) for c in order}
    later = _chunk_counts(sizes, initial, n_later)

    # cut each class's shuffled indices into pieces; initial classes keep piece 0 for batch 0
    first_batch, pieces = [], {}
    for c in order:
        idx = np.flatnonzero(train_y == c)
        idx = idx[rng.permutation(idx.size)]
        parts = np.array_split(idx, later[c] + (1 if c in initial else 0))
        if c in initial:
            first_batch.append(parts.pop(0))
        pieces[c] = [np.sort(p) for p in parts]

    # evenly spaced introduction slots for the later classes
    slots = [int(k * n_later // max(len(new_later), 1)) for k in range(len(new_later))]
    batches = [np.sort(np.concatenate(first_batch))]
    introduced = list(order[:initial_classes])
    pending = list(new_later)
    for t in range(n_later):
        pool = [c for c in introduced for _ in pieces[c]]
        must = pending and (t >= slots[len(new_later) - len(pending)] or not pool
                            or n_later - t == len(pending))
        if must:
            c = pending.pop(0)
            introduced.append(c)
        else:
            c = pool[int(rng.integers(len(pool)))]
        batches.append(pieces[c].pop(0))
    seen: set[int] = set()
    return [make_experience(i, b, test_y, train_y, seen) for i, b in enumerate(batches)]


def seen_classes(stream: list[Experience], upto: int) -> list[int]:
    """Sorted labels introduced in experiences 0..upto."""
    return sorted({c for e in stream[:upto + 1] for c in e.new_classes})
