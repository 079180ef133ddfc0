"""SLDA (streaming == batch LDA, learning, bytes) and raw-image replay for derpp, er_ace and gdumb."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cl_fixtures import make_image_folder, tiny_config
from tinycl.cl import checkpoint
from tinycl.cl.config import validate
from tinycl.cl.memory import ReplayMemory
from tinycl.cl.runner import run
from tinycl.cl.setup import build
from tinycl.cl.strategies.slda import SLDA, pool
from tinycl.errors import TinyclError


def _slda(d_shape, k, shrinkage=1e-4):
    """An SLDA head outside a run (what it reads of the run: config, latent shape, class count)."""
    fake = SimpleNamespace(cfg={"strategy_options": {"shrinkage": shrinkage}},
                           setup=SimpleNamespace(latent_shape=tuple(d_shape), dataset=SimpleNamespace(num_classes=k)))
    s = SLDA(fake)
    s.start(None)
    return s


def _numpy_lda(x: np.ndarray, y: np.ndarray, k: int, shrinkage: float):
    """Batch LDA: class means, pooled within-class covariance (/ N), and the shrunk LDA classifier."""
    seen = np.array([c for c in range(k) if (y == c).any()])
    means = np.stack([x[y == c].mean(0) for c in seen])
    centred = x - means[np.searchsorted(seen, y)]
    cov = centred.T @ centred / len(x)
    lam = np.linalg.inv((1 - shrinkage) * cov + shrinkage * np.eye(x.shape[1]))
    w = lam @ means.T
    return seen, means, cov, w, -0.5 * np.einsum("kd,dk->k", means, w)


# ----------------------------------------------------------------- SLDA: streaming == batch
@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(2, 5), st.integers(1, 40), st.floats(1e-4, 0.5), st.integers(0, 2 ** 16))
def test_slda_streaming_equals_batch_lda(d, k, n, shrinkage, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * 2 + torch.randn(d, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=g)
    s = _slda((d,), k, shrinkage)
    cuts = sorted(torch.randint(0, n + 1, (3,), generator=g).tolist())
    for a, b in zip([0, *cuts], [*cuts, n]):  # a stream of chunks, one sample at a time inside
        s.fit(x[a:b], y[a:b])
    seen, means, cov, w, b = _numpy_lda(x.numpy(), y.numpy(), k, shrinkage)
    got_seen, got_w, got_b = s.head()
    np.testing.assert_array_equal(got_seen.numpy(), seen)
    np.testing.assert_allclose(s.means[got_seen].numpy(), means, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(s.cov.numpy(), cov, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(got_w.numpy(), w, rtol=1e-6, atol=1e-6 * np.abs(w).max())
    np.testing.assert_allclose(got_b.numpy(), b, rtol=1e-6, atol=1e-6 * np.abs(b).max())
    assert s.counts.tolist() == np.bincount(y.numpy(), minlength=k).tolist()
    scores = x.numpy() @ w + b
    if len(seen) > 1 and np.all(np.abs(np.sort(scores, 1)[:, -1] - np.sort(scores, 1)[:, -2]) > 1e-6):
        assert s.predict(x).tolist() == seen[scores.argmax(1)].tolist()


def test_slda_pools_latents_to_channels():
    lat = torch.randn(5, 3, 4, 6)
    torch.testing.assert_close(pool(lat), lat.double().mean((2, 3)))
    torch.testing.assert_close(pool(lat[:, :, 0, 0]), lat[:, :, 0, 0].double())


def test_slda_learns_a_small_stream_of_gaussian_classes():
    """Six classes with a shared, strongly correlated covariance (nearest mean fails on it), in 3
    experiences; SLDA keeps all of them."""
    g = torch.Generator().manual_seed(0)
    d, k = 6, 6
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    a[:, 0] *= 8  # one direction with far larger spread than the class separation
    mu = torch.randn(k, d, generator=g, dtype=torch.float64) * 1.5

    def sample(n):
        y = torch.arange(k).repeat_interleave(n)
        return mu[y] + torch.randn(len(y), d, generator=g, dtype=torch.float64) @ a.T, y
    x, y = sample(60)
    xt, yt = sample(100)
    s = _slda((d,), k)
    for e in range(3):
        m = (y // 2) == e
        s.fit(x[m], y[m])
    acc = (s.predict(xt) == yt).double().mean().item()
    ncm = torch.cdist(xt, s.means).argmin(1)  # nearest class mean on the same stream, for reference
    assert acc > 0.8 and acc > (ncm == yt).double().mean().item() + 0.1


def test_slda_refuses_a_feature_too_large_for_its_covariance():
    with pytest.raises(TinyclError, match="covariance .* above 64 MiB"):
        _slda((5000, 2, 2), 3)
    for bad in (1.5, 0):
        with pytest.raises(TinyclError, match="shrinkage"):
            validate({"strategy": "slda", "strategy_options": {"shrinkage": bad}})


# ----------------------------------------------------------------- runs on the tiny image folder
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = make_image_folder(tmp_path_factory.mktemp("imgs"))
    base = tiny_config(folder, lr_bits=8)
    return base, build(validate(base), tmp_path_factory.mktemp("setup"), progress=False)


def _run(setup, out, stop_after=None, **kw):
    base, s = setup
    return run(dict(base, **kw), out, progress=False, setup=s, stop_after=stop_after)


def _strip(r):
    r.pop("timing")
    for e in r["per_experience"]:
        e.pop("seconds")
    return r


def test_slda_run_counts_its_memory_and_learns(setup, tmp_path):
    res = _run(setup, tmp_path / "s", strategy="slda")
    fp, k, d = res["footprint_bytes"], 4, 8  # tinycl-net at relu: 8 channels of 14 x 14
    tri = d * (d + 1) // 2
    assert {key: v for key, v in fp.items() if key.startswith("slda")} == {
        "slda_means": 4 * k * d, "slda_counts": 4 * (k + 1), "slda_covariance": 4 * tri,
        "slda_classifier": 4 * (k * d + k), "slda_cholesky": 4 * tri}
    assert fp["back_weights"] == fp["back_gradients"] == fp["optimizer_state"] == fp["replay_memory"] == 0
    assert fp["total"] == sum(v for key, v in fp.items() if key != "total")
    assert res["learning_event"] is None
    assert res["learning_event_extra"]["extra_state_bytes"] == 4 * (k * d + k + 1 + 2 * tri + k * d + k)
    assert res["per_experience"][0]["train_samples"] == 0 and res["per_experience"][0]["train_macs"] > 0
    assert res["average_accuracy"] > 0.5  # 4 classes told apart by colour: chance is 0.25


def test_slda_resume_is_identical(setup, tmp_path):
    full = _run(setup, tmp_path / "full", strategy="slda")
    assert _run(setup, tmp_path / "part", strategy="slda", stop_after=2) == {"stopped_after": 2}
    resumed = run({}, tmp_path / "part", resume=True, progress=False, setup=setup[1])
    assert _strip(resumed) == _strip(full)


IMG = 3 * 16 * 16          # bytes of one uint8 image of the tiny folder
RAW_SLOTS = (20 * (8 * 14 * 14 + 4) + 8 * 8 - 8) // (IMG + 4)  # images in the bytes of 20 8-bit latents


@pytest.mark.parametrize("strategy", ["derpp", "er_ace", "gdumb"])
def test_raw_replay_stores_images_in_latent_replays_bytes(setup, tmp_path, strategy):
    raw = _run(setup, tmp_path / "raw", strategy=strategy, replay="raw")
    lat = _run(setup, tmp_path / "lat", strategy=strategy)
    assert raw["config"]["replay"] == "raw" and "replay" not in lat["config"]
    assert raw["replay_capacity"] == RAW_SLOTS == 40 and lat["replay_capacity"] == 20
    mem = raw["replay_memory_bytes"]
    assert mem["payload"] == 40 * IMG and mem["labels"] == mem["experiences"] == 40 * 2 and mem["metadata"] == 8
    logits = 40 * 4 + 8 if strategy == "derpp" else 0  # 4 logits at 8 bits per slot, scale and zero point
    assert raw["footprint_bytes"]["replay_memory"] == 40 * (IMG + 4) + 8 + logits
    # the memory holds the training images themselves
    state = checkpoint.load(tmp_path / "raw" / "state.ckpt")
    x, y, _ = ReplayMemory.from_state_dict(state["memory"]).tensors()
    base, s = setup
    images = s.dataset.train.x.float().reshape(len(s.dataset.train.x), -1)
    for row, label in zip(x.reshape(len(x), -1), y):
        hit = (images == row).all(1).nonzero().flatten()
        assert len(hit) and (s.dataset.train.y[hit] == label).all()
    # replayed images ran the front again: more MACs than latent replay once there is a memory
    mr, ml = [e["train_macs"] for e in raw["per_experience"]], [e["train_macs"] for e in lat["per_experience"]]
    assert mr[0] > ml[0] if strategy == "gdumb" else mr[0] == ml[0]
    assert all(a > b for a, b in zip(mr[1:], ml[1:]))
    if strategy != "gdumb":
        assert raw["learning_event_extra"]["extra_ops_per_step"] > lat["learning_event_extra"]["extra_ops_per_step"]


def test_raw_derpp_resumes_identically_and_trains_in_fp16(setup, tmp_path):
    full = _run(setup, tmp_path / "full", strategy="derpp", replay="raw")
    assert _run(setup, tmp_path / "part", strategy="derpp", replay="raw", stop_after=1) == {"stopped_after": 1}
    resumed = run({}, tmp_path / "part", resume=True, progress=False, setup=setup[1])
    assert _strip(resumed) == _strip(full)
    half = _run(setup, tmp_path / "half", strategy="er_ace", replay="raw", precision="fp16")
    assert not half["diverged"] and half["replay_capacity"] == 40


def test_replay_key_is_checked():
    assert "replay" not in validate({}) and validate({"strategy": "gdumb", "replay": "latent"})["replay"] == "latent"
    for bad, msg in (({"strategy": "lwf", "replay": "raw"}, "applies to strategies derpp, er_ace, gdumb"),
                     ({"strategy": "latent_replay", "replay": "raw"}, "applies to strategies"),
                     ({"strategy": "raw_replay", "replay": "latent"}, "applies to strategies"),
                     ({"strategy": "derpp", "replay": "raw", "lr_quantize_new": True}, "lr_quantize_new"),
                     ({"strategy": "derpp", "replay": "pixels"}, "latent, raw")):
        with pytest.raises(TinyclError, match=msg):
            validate(bad)


# ----------------------------------------------------------------- the shipped CIFAR-10 subset, tiny settings
def test_raw_replay_methods_on_the_shipped_data(tmp_path):
    """derpp, er_ace and gdumb with replay: raw on the shipped data and backbone (16 training images per
    class, 1 epoch): each stores 32 x 32 RGB images at the bytes of 10 8-bit latents of block2_1."""
    cfg = validate({"epochs": 1, "n_replays": 10, "lr_bits": 8, "batch_size": 16, "replay_batch": 16})
    s = build(cfg, tmp_path / "setup", progress=False)
    y = s.dataset.train.y
    for e in s.stream:
        e.train_idx = torch.cat([e.train_idx[y[e.train_idx] == c][:16] for c in e.classes])
    d = math.prod(s.latent_shape)
    slots = (10 * (d + 4) + 8 * s.latent_shape[0] - 8) // (3 * 32 * 32 + 4)  # per-channel metadata, 8 B each
    for strategy in ("derpp", "er_ace", "gdumb"):
        res = run(dict(cfg, strategy=strategy, replay="raw"), tmp_path / strategy, progress=False, setup=s)
        assert res["replay_capacity"] == slots and not res["diverged"]
        assert res["replay_memory_bytes"]["payload"] == slots * 3 * 32 * 32  # full after the first experience
        assert 0 <= res["average_accuracy"] <= 1
