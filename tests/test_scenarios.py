"""tinycl.data.stream: class-incremental and NICv2-style streams."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from tinycl.data.stream import class_incremental, nic_v2, seen_classes
from tinycl.data import Dataset, Split
from tinycl.errors import TinyclError


def make_ds(train_counts, test_counts=None, seed=0):
    """Labels only matter here; images are 1x1x1 zeros. Labels are shuffled so that
    index order and class order differ."""
    rng = np.random.default_rng(seed)
    test_counts = test_counts or [2] * len(train_counts)

    def split(counts):
        y = np.repeat(np.arange(len(counts)), counts)
        y = y[rng.permutation(y.size)]
        return Split(torch.zeros(y.size, 1, 1, 1, dtype=torch.uint8), torch.from_numpy(y.astype(np.int64)))

    return Dataset(split(train_counts), split(test_counts), [f"c{i}" for i in range(len(train_counts))])


def test_class_incremental_hand_worked():
    ds = make_ds([3, 4, 5, 6, 7], [1, 2, 3, 4, 5])
    stream = class_incremental(ds, 2, 2, class_order=[4, 0, 3, 1, 2])
    assert [e.classes for e in stream] == [[0, 4], [1, 3], [2]]
    assert [e.new_classes for e in stream] == [[0, 4], [1, 3], [2]]
    assert [len(e.train_idx) for e in stream] == [3 + 7, 6 + 4, 5]
    assert [len(e.test_idx) for e in stream] == [1 + 5, 4 + 2, 3]
    y, ty = ds.train.y, ds.test.y
    for e in stream:
        assert set(y[e.train_idx].tolist()) == set(e.classes)
        assert set(ty[e.test_idx].tolist()) == set(e.classes)
        assert torch.equal(e.train_idx, e.train_idx.sort().values)
    assert [e.id for e in stream] == [0, 1, 2]
    assert seen_classes(stream, 1) == [0, 1, 3, 4]


def test_class_incremental_coverage_and_seed():
    ds = make_ds([5] * 10)
    stream = class_incremental(ds, 4, 3, seed=7)
    assert [len(e.classes) for e in stream] == [4, 3, 3]
    idx = torch.cat([e.train_idx for e in stream]).sort().values
    assert torch.equal(idx, torch.arange(50))
    tidx = torch.cat([e.test_idx for e in stream]).sort().values
    assert torch.equal(tidx, torch.arange(20))
    order = [c for e in stream for c in e.classes]
    assert sorted(order) == list(range(10))
    assert [e.classes for e in class_incremental(ds, 4, 3, seed=7)] == [e.classes for e in stream]
    seeded = {tuple(e.classes[0] for e in class_incremental(ds, 2, 2, seed=s)) for s in range(6)}
    assert len(seeded) > 1
    natural = class_incremental(ds, 0, 5, seed=None)
    assert [e.classes for e in natural] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def test_class_incremental_subset_order_and_errors():
    ds = make_ds([2, 2, 2, 2])
    stream = class_incremental(ds, 1, 1, class_order=[3, 1])
    assert [e.classes for e in stream] == [[3], [1]]
    with pytest.raises(TinyclError, match="repeats"):
        class_incremental(ds, 1, 1, class_order=[1, 1])
    with pytest.raises(TinyclError, match="outside"):
        class_incremental(ds, 1, 1, class_order=[0, 4])
    with pytest.raises(TinyclError, match="classes_per_experience"):
        class_incremental(ds, 1, 0)
    with pytest.raises(TinyclError, match="initial_classes"):
        class_incremental(ds, 5, 1)
    empty = make_ds([2, 0, 2])
    with pytest.raises(TinyclError, match="no training samples"):
        class_incremental(empty, 1, 1, class_order=[0, 1, 2])


def test_nic_v2_core50_shaped_stream():
    """50 classes x 80 images, 10 initial, 391 batches: 400 pieces of 10 images, as CORe50's
    50 objects x 8 sessions in NICv2-391 (batch 0 = one piece of each of 10 classes)."""
    ds = make_ds([80] * 50, [3] * 50)
    stream = nic_v2(ds, 391, 10, seed=3)
    assert len(stream) == 391
    assert len(stream[0].classes) == 10 and len(stream[0].train_idx) == 100
    assert all(len(e.train_idx) == 10 and len(e.classes) == 1 for e in stream[1:])
    idx = torch.cat([e.train_idx for e in stream]).sort().values
    assert torch.equal(idx, torch.arange(4000))
    intro = [e.id for e in stream[1:] if e.new_classes]
    assert len(intro) == 40  # every later class introduced once
    assert intro[0] == 1 and intro[-1] > 300  # spread over the whole stream
    assert max(np.diff(intro)) <= 2 * 390 // 40
    # pieces of seen classes come back: each class shows up in 8 batches (7 if initial)
    appearances = np.bincount([c for e in stream[1:] for c in e.classes], minlength=50)
    first = set(stream[0].classes)
    assert all(appearances[c] == (7 if c in first else 8) for c in range(50))
    # no class appears before it is introduced
    seen = set(stream[0].classes)
    for e in stream[1:]:
        assert set(e.classes) <= seen | set(e.new_classes)
        seen |= set(e.new_classes)
    tidx = torch.cat([e.test_idx for e in stream]).sort().values
    assert torch.equal(tidx, torch.arange(150))


def test_nic_v2_deterministic_and_seeded():
    ds = make_ds([30] * 6)
    a = nic_v2(ds, 20, 2, seed=1)
    b = nic_v2(ds, 20, 2, seed=1)
    assert all(torch.equal(x.train_idx, y.train_idx) for x, y in zip(a, b))
    c = nic_v2(ds, 20, 2, seed=2)
    assert any(not torch.equal(x.train_idx, y.train_idx) for x, y in zip(a, c))
    given_order = nic_v2(ds, 20, 2, seed=1, class_order=[5, 4, 3, 2, 1, 0])
    assert given_order[0].classes == [4, 5]
    assert [e.new_classes[0] for e in given_order[1:] if e.new_classes] == [3, 2, 1, 0]


def test_nic_v2_errors():
    ds = make_ds([3, 3, 3])
    with pytest.raises(TinyclError, match="too few"):
        nic_v2(ds, 2, 1)
    with pytest.raises(TinyclError, match="too many batches"):
        nic_v2(ds, 10, 1)  # 9 images cannot fill 10 non-empty batches
    with pytest.raises(TinyclError, match="initial_classes"):
        nic_v2(ds, 5, 0)
    assert len(nic_v2(ds, 9, 1)) == 9  # one image a batch is just possible


@settings(max_examples=25, deadline=None)
@given(counts=st.lists(st.integers(1, 12), min_size=1, max_size=7), data=st.data())
def test_nic_v2_any_dataset_covers_every_index_once(counts, data):
    ds = make_ds(counts, seed=len(counts))
    initial = data.draw(st.integers(1, len(counts)))
    n_min = len(counts) - initial + 1
    n_max = sum(counts) - initial + 1  # every piece holds at least one image
    n_batches = data.draw(st.integers(n_min, n_max))
    seed = data.draw(st.integers(0, 50))
    stream = nic_v2(ds, n_batches, initial, seed=seed)
    assert len(stream) == n_batches
    assert all(len(e.train_idx) > 0 for e in stream)
    idx = torch.cat([e.train_idx for e in stream]).sort().values
    assert torch.equal(idx, torch.arange(sum(counts)))
    assert len(stream[0].classes) == initial
    assert all(len(e.classes) == 1 for e in stream[1:])
    assert sorted(c for e in stream for c in e.new_classes) == list(range(len(counts)))
