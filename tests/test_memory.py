"""ReplayMemory: labels stay with latents, exact bytes, AR1/reservoir/class-balanced rules."""

import io

import pytest
import torch
from hypothesis import given, settings, strategies as st

from tinycl.cl.memory import ReplayMemory
from tinycl.errors import TinyclError
from tinycl.numerics.latent_quant import LatentQuantizer

POLICIES = ["ar1", "reservoir", "class_balanced"]


def grid_quantizer(bits, shape=(2, 3)):
    """Calibrated on 0..2**bits-1 (scale 1): integers 0..15 are stored exactly for bits >= 4."""
    if isinstance(bits, str):
        return LatentQuantizer(bits)
    calib = torch.zeros(2, *shape)
    calib[1] = 2.0 ** bits - 1
    q = LatentQuantizer(bits).fit(calib)
    assert (q.scale.item(), q.zero_point.item()) == (1.0, 0.0)
    return q


def tagged(labels, exp, shape=(2, 3)):
    """Latents whose channel 0 holds the label and channel 1 the experience id."""
    x = torch.empty(len(labels), *shape)
    x[:, 0] = labels.float().view(-1, *([1] * (len(shape) - 1)))
    x[:, 1] = float(exp)
    return x


def index_memory(capacity, policy, n_classes=4, n_per_exp=(30, 30, 30), chunk=11, seed=0):
    """Stream of samples whose latent is their global index; returns the memory."""
    q = LatentQuantizer("fp32")
    mem = ReplayMemory(capacity, q, policy, seed=seed)
    start = 0
    for e, n in enumerate(n_per_exp):
        idx = torch.arange(start, start + n)
        for i in range(0, n, chunk):
            part = idx[i:i + chunk]
            mem.add(part.float().view(-1, 1), part % n_classes, e)
        start += n
    return mem


def stored_ids(mem):
    return mem.tensors()[0].view(-1).long().tolist()


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("bits", [4, 7, 8, "fp16", "fp32"])
def test_every_latent_keeps_its_label_and_experience(policy, bits):
    g = torch.Generator().manual_seed(7)
    mem = ReplayMemory(25, grid_quantizer(bits), policy, seed=3)
    for e in range(4):
        labels = torch.randint(0, 10, (37,), generator=g)
        perm = torch.randperm(37, generator=g)          # shuffled loader order
        x = tagged(labels, e)[perm]
        for i in range(0, 37, 10):                      # several calls per experience
            mem.add(x[i:i + 10], labels[perm][i:i + 10], e)
    assert len(mem) == 25
    lat, lab = mem.sample(25, torch.Generator().manual_seed(1))
    assert torch.equal(lat[:, 0], lab.float().view(-1, 1).expand(-1, 3))
    lat, lab, exps = mem.tensors()
    assert torch.equal(lat[:, 0], lab.float().view(-1, 1).expand(-1, 3))
    assert torch.equal(lat[:, 1], exps.float().view(-1, 1).expand(-1, 3))


def test_stored_values_are_the_quantized_latents():
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(9, 3, 4, generator=g))
    q = LatentQuantizer(3, "channel").fit(x)
    mem = ReplayMemory(9, q, "reservoir")
    mem.add(x, torch.arange(9), 0)                      # fits: stored in order
    lat, lab, _ = mem.tensors()
    assert torch.equal(lat, q.decode(q.encode(x))) and lab.tolist() == list(range(9))


def test_nbytes_hand_worked():
    # 15 values at 3 bits = 45 bits -> 6 bytes a row; 7 rows
    q = LatentQuantizer(3).fit(torch.rand(4, 3, 5))
    mem = ReplayMemory(10, q, "reservoir")
    assert mem.nbytes()["total"] == 8                   # only the metadata before any add
    mem.add(torch.rand(7, 3, 5), torch.zeros(7, dtype=torch.long), 0)
    assert mem.nbytes() == {"payload": 42, "labels": 14, "experiences": 14, "metadata": 8, "total": 78}
    assert mem.nbytes(allocated=True) == {"payload": 60, "labels": 20, "experiences": 20, "metadata": 8,
                                          "total": 108}
    assert mem.state_dict()["rows"].numel() == 42
    # per-channel metadata: 3 channels x (fp32 scale + fp32 zero point)
    qc = LatentQuantizer(3, "channel").fit(torch.rand(4, 3, 5))
    mc = ReplayMemory(10, qc, "ar1")
    mc.add(torch.rand(2, 3, 5), torch.zeros(2, dtype=torch.long), 0)
    assert mc.nbytes()["metadata"] == 24
    # 7-bit codes take 7/8 byte: a 4096-value latent is 3584 bytes
    m7 = ReplayMemory(4, LatentQuantizer(7).fit(torch.rand(2, 4096)), "ar1")
    m7.add(torch.rand(3, 4096), torch.zeros(3, dtype=torch.long), 0)
    assert m7.nbytes()["payload"] == 3 * 3584
    # fp16: 2 bytes a value, no metadata
    mf = ReplayMemory(4, LatentQuantizer("fp16"), "ar1")
    mf.add(torch.rand(3, 10), torch.zeros(3, dtype=torch.long), 0)
    assert mf.nbytes() == {"payload": 60, "labels": 6, "experiences": 6, "metadata": 0, "total": 72}


def test_raw_uint8_replay_is_lossless():
    g = torch.Generator().manual_seed(2)
    imgs = torch.randint(0, 256, (12, 3, 8, 8), generator=g, dtype=torch.uint8)
    q = LatentQuantizer(8).fit(imgs[:4])
    mem = ReplayMemory(12, q, "reservoir")
    mem.add(imgs, torch.arange(12) % 10, 0)
    lat, lab, _ = mem.tensors()
    assert torch.equal(lat, imgs.float()) and lab.tolist() == [i % 10 for i in range(12)]
    assert mem.nbytes()["payload"] == 12 * 3 * 8 * 8


def test_ar1_slot_counts_hand_worked():
    # capacity 12, experience sizes 5, 20, 20, 20
    mem = index_memory(12, "ar1", n_per_exp=(5, 20, 20, 20), chunk=7)
    exps = mem.tensors()[2]
    # exp0 takes its 5; exp1 gets 12 // 2 = 6 (free slots); exp2 gets 4 (1 free + 3 evicted);
    # exp3 gets 3 (evicted from earlier ones)
    assert len(mem) == 12
    assert (exps == 3).sum() == 3 and (exps == 2).sum() <= 4 and (exps == 1).sum() <= 6
    mem2 = index_memory(12, "ar1", n_per_exp=(5, 20, 20), chunk=7)
    assert torch.bincount(mem2.tensors()[2]).tolist()[2] == 4 and len(mem2) == 12
    mem1 = index_memory(12, "ar1", n_per_exp=(5, 20), chunk=7)
    assert torch.bincount(mem1.tensors()[2]).tolist() == [5, 6] and len(mem1) == 11
    # a full first experience: 12 from exp0, then exactly 6 and 6
    full = index_memory(12, "ar1", n_per_exp=(30, 30), chunk=30)
    assert torch.bincount(full.tensors()[2]).tolist() == [6, 6]


def test_ar1_rejects_decreasing_experience():
    mem = ReplayMemory(4, LatentQuantizer("fp32"), "ar1")
    mem.add(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long), 1)
    with pytest.raises(TinyclError, match="must not decrease"):
        mem.add(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long), 0)


def keep_frequencies(policy, trials, n_per_exp, capacity, chunk):
    total = sum(n_per_exp)
    counts = torch.zeros(total)
    for s in range(trials):
        counts[stored_ids(index_memory(capacity, policy, n_per_exp=n_per_exp, chunk=chunk, seed=s))] += 1
    return counts / trials


def test_ar1_choices_are_uniform():
    # exp0 fills all 12 slots; exp1 (20 samples, in chunks of 7) keeps 6: each kept
    # with probability 6/20 = 0.3 and each exp0 sample survives with 6/12 = 0.5.
    f = keep_frequencies("ar1", 300, (12, 20), 12, chunk=7)
    assert (f[:12] - 0.5).abs().max() < 0.12, f[:12]
    assert (f[12:] - 0.3).abs().max() < 0.11, f[12:]


def test_reservoir_keeps_each_sample_with_equal_probability():
    # 60 samples, capacity 10: each kept with probability 10/60
    f = keep_frequencies("reservoir", 300, (20, 20, 20), 10, chunk=9)
    assert (f - 1 / 6).abs().max() < 0.09, f
    assert abs(float(f.sum()) - 10) < 1e-9


def test_class_balanced_counts():
    # class-incremental: 5 classes of 30, one after another, capacity 20 -> 4 each
    q = LatentQuantizer("fp32")
    mem = ReplayMemory(20, q, "class_balanced", seed=1)
    expected = [[20], [10, 10], [6, 7, 7], [5, 5, 5, 5], [4, 4, 4, 4, 4]]  # worked by hand
    for c in range(5):
        mem.add(torch.full((30, 1), float(c)), torch.full((30,), c), c)
        assert sorted(torch.bincount(mem.tensors()[1]).tolist()) == expected[c]
    # a rare class keeps all of its 3 samples; the others split the rest within one
    mem = ReplayMemory(20, q, "class_balanced", seed=2)
    y = torch.tensor([1] * 40 + [0] * 3 + [2] * 40)
    mem.add(y.float().view(-1, 1), y, 0)
    cnt = torch.bincount(mem.tensors()[1]).tolist()
    assert cnt[0] == 3 and sorted(cnt[1:]) == [8, 9]


def test_class_balanced_is_uniform_inside_a_class():
    # one class, 40 samples, capacity 10: each kept with probability 1/4
    counts = torch.zeros(40)
    for s in range(300):
        mem = ReplayMemory(10, LatentQuantizer("fp32"), "class_balanced", seed=s)
        mem.add(torch.arange(40.0).view(-1, 1), torch.zeros(40, dtype=torch.long), 0)
        counts[stored_ids(mem)] += 1
    assert ((counts / 300) - 0.25).abs().max() < 0.1


@settings(max_examples=15, deadline=None)
@given(policy=st.sampled_from(POLICIES), capacity=st.integers(1, 9), sizes=st.lists(st.integers(0, 12), min_size=1,
       max_size=4), n=st.integers(0, 12))
def test_sizes_and_samples_for_odd_streams(policy, capacity, sizes, n):
    mem = index_memory(capacity, policy, n_per_exp=sizes, chunk=5)
    assert len(mem) == min(capacity, sum(sizes)) or (policy == "ar1" and len(mem) <= capacity)
    ids = stored_ids(mem) if len(mem) else []
    assert len(set(ids)) == len(ids)                    # no sample stored twice
    if len(mem):
        lat, lab = mem.sample(n)
        assert lat.shape == (min(n, len(mem)), 1)
        assert torch.equal(lat.view(-1).long() % 4, lab)  # label = index % 4


def test_sample_is_reproducible_and_distinct():
    mem = index_memory(15, "reservoir", n_per_exp=(40,))
    a = mem.sample(10, torch.Generator().manual_seed(5))
    b = mem.sample(10, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert len(set(a[0].view(-1).tolist())) == 10
    assert mem.sample(100)[0].shape[0] == 15


def test_state_dict_round_trip_continues_identically():
    g = torch.Generator().manual_seed(4)
    q = LatentQuantizer(5, "channel", "mse").fit(torch.rand(20, 2, 3, generator=g))
    mem = ReplayMemory(10, q, "class_balanced", seed=9)
    x, y = torch.rand(25, 2, 3, generator=g), torch.randint(0, 3, (25,), generator=g)
    mem.add(x, y, 0)
    buf = io.BytesIO()
    torch.save(mem.state_dict(), buf)
    buf.seek(0)
    other = ReplayMemory.from_state_dict(torch.load(buf, weights_only=True))
    assert other.nbytes() == mem.nbytes() and other.policy == "class_balanced"
    x2, y2 = torch.rand(25, 2, 3, generator=g), torch.randint(0, 5, (25,), generator=g)
    mem.add(x2, y2, 1)
    other.add(x2, y2, 1)
    for a, b in zip(mem.tensors(), other.tensors()):
        assert torch.equal(a, b)


def test_errors_are_clear():
    q = LatentQuantizer("fp32")
    with pytest.raises(TinyclError, match="policy"):
        ReplayMemory(4, q, "fifo")
    with pytest.raises(TinyclError, match="capacity"):
        ReplayMemory(0, q)
    mem = ReplayMemory(4, q)
    with pytest.raises(TinyclError, match="empty"):
        mem.sample(1)
    with pytest.raises(TinyclError, match="one label per latent"):
        mem.add(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long), 0)
    with pytest.raises(TinyclError, match="integers"):
        mem.add(torch.zeros(2, 2), torch.zeros(2), 0)
    with pytest.raises(TinyclError, match="0..32767"):
        mem.add(torch.zeros(1, 2), torch.tensor([40000]), 0)
    mem.add(torch.zeros(1, 2), torch.tensor([1]), 0)
    with pytest.raises(TinyclError, match="sample shape"):
        mem.add(torch.zeros(1, 3), torch.tensor([1]), 0)
    with pytest.raises(TinyclError, match="not calibrated"):
        ReplayMemory(4, LatentQuantizer(4)).add(torch.zeros(1, 2), torch.tensor([1]), 0)
    with pytest.raises(TinyclError, match="bad state dict"):
        mem.load_state_dict({"format": "tinycl.replay_memory/1"})
    bad = mem.state_dict()
    bad["rows"] = torch.zeros(1, 3, dtype=torch.uint8)
    with pytest.raises(TinyclError, match="bad state dict"):
        mem.load_state_dict(bad)
