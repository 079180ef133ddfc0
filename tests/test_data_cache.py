"""On-disk cache (data/cache.py): keys, atomic entries, damaged entries, decoded folders, latents."""

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tinycl.cl import setup as S
from tinycl.data import cache, imagefolder
from tinycl.data.imagefolder import load_imagefolder
from tinycl.graph import capture
from tinycl.models.int8_front import quantize_front


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("TINYCL_CACHE", str(d))
    monkeypatch.setattr(cache, "MIN_ITEMS", 0)  # cache even the small inputs of these tests
    return d


def test_digest_tells_inputs_apart():
    t = torch.arange(6, dtype=torch.int8)
    assert cache.digest(t, "a") == cache.digest(t.clone(), "a")
    assert cache.digest(t) != cache.digest(t.to(torch.int16))  # same values, other dtype
    assert cache.digest(t) != cache.digest(t.reshape(2, 3))
    assert cache.digest([1, 2]) != cache.digest([12]) != cache.digest("12")
    assert cache.digest({"a": 1, "b": 2}) == cache.digest({"b": 2, "a": 1})
    with pytest.raises(TypeError):
        cache.digest(object())


def test_save_load_round_trip_and_cache_off(cache_dir, monkeypatch):
    arrays = {"q": np.arange(12, dtype=np.int8).reshape(3, 4), "scale": np.array(0.25), "zp": np.array(-3)}
    path = cache.save("t", "k1", arrays)
    assert path is not None and path.parent == cache_dir / "t"
    got = cache.load("t", "k1")
    assert set(got) == set(arrays)
    for k in arrays:
        assert got[k].shape == arrays[k].shape and np.array_equal(got[k], arrays[k])
    assert cache.load("t", "other") is None
    assert not list((cache_dir / "t").glob("*.tmp"))  # no temporary file left behind
    monkeypatch.setenv("TINYCL_CACHE", "off")
    assert cache.cache_root() is None and cache.load("t", "k1") is None and cache.save("t", "k2", arrays) is None


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_damaged_entry_is_dropped(cache_dir, damage):
    arrays = {"x": np.arange(1000, dtype=np.int32)}
    path = cache.save("t", "k", arrays)
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip":
        i = raw.index(np.arange(1000, dtype=np.int32)[500:502].tobytes())
        raw[i] ^= 0xFF  # one payload byte: the zip still reads, the checksum does not match
    else:
        raw = bytearray(b"not a zip file at all")
    path.write_bytes(bytes(raw))
    assert cache.load("t", "k") is None
    assert not path.exists()


def _folder(root, n=3, seed=0):
    rng = np.random.default_rng(seed)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_imagefolder_decodes_once_then_reads_the_cache(cache_dir, tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    _folder(root)
    calls = []
    real = imagefolder._decode_all

    def counting(paths, channels, size):
        calls.append(len(paths))
        return real(paths, channels, size)

    monkeypatch.setattr(imagefolder, "_decode_all", counting)
    a = load_imagefolder(root)
    b = load_imagefolder(root)
    assert len(calls) == 1  # second load: no decoding
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.x, b.test.x)
    assert torch.equal(a.train.y, b.train.y)
    load_imagefolder(root, size=(4, 4))  # other parameters: another entry
    assert len(calls) == 2
    # a changed file (new pixels, new mtime) misses the cache and is seen
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / "cat" / "1.png")
    c = load_imagefolder(root)
    assert len(calls) == 3
    assert not torch.equal(torch.cat([a.train.x, a.test.x]), torch.cat([c.train.x, c.test.x]))
    # a damaged entry is recomputed
    for p in (cache_dir / "imagefolder").glob("*.npz"):
        p.write_bytes(b"damaged")
    d = load_imagefolder(root)
    assert len(calls) == 4 and torch.equal(c.train.x, d.train.x)


def test_latents_cache_hit_is_identical_and_changed_inputs_miss(cache_dir, monkeypatch):
    torch.manual_seed(0)
    front = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (40, 3, 8, 8), generator=g, dtype=torch.uint8)
    calib = (x[:16].float() / 255 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    qf = quantize_front(front, calib)
    key = S._front_key(capture(front, (3, 8, 8)), calib)
    want = torch.cat([qf(S.B.to_input(x[i:i + 7], mean, std)) for i in range(0, 40, 7)])
    calls = []
    real = qf.forward_int

    def counting(xb):
        calls.append(len(xb))
        return real(xb)

    monkeypatch.setattr(qf, "forward_int", counting)
    first = S._latents(qf, x, mean, std, key=key)
    n_first = len(calls)
    second = S._latents(qf, x, mean, std, key=key)
    assert n_first > 0 and len(calls) == n_first  # second: from the cache
    assert torch.equal(first, want) and torch.equal(second, want) and second.dtype == torch.float32
    x2 = x.clone()
    x2[3, 0, 0, 0] ^= 1  # one pixel changed: a miss
    S._latents(qf, x2, mean, std, key=key)
    assert len(calls) > n_first
    front2 = copy.deepcopy(front)
    with torch.no_grad():
        front2[0].weight[0, 0, 0, 0] += 0.01  # other backbone weights: another key
    assert S._front_key(capture(front2, (3, 8, 8)), calib) != key
    assert S._front_key(capture(front, (3, 8, 8)), calib[:8]) != key
    # damaged entry: recomputed, same result
    for p in (cache_dir / "latents").glob("*.npz"):
        p.write_bytes(p.read_bytes()[:100])
    n = len(calls)
    again = S._latents(qf, x, mean, std, key=key)
    assert len(calls) > n and torch.equal(again, want)


def test_small_inputs_are_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYCL_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "imgs"
    _folder(root)
    load_imagefolder(root)
    assert not (tmp_path / "cache" / "imagefolder").exists()  # 6 files < cache.MIN_ITEMS


def test_least_recently_used_entries_are_evicted(cache_dir, monkeypatch):
    import os
    monkeypatch.setenv("TINYCL_CACHE_MAX_GB", str(25_000 / (1 << 30)))  # about 25 kB
    x = {"x": np.zeros(10_000, dtype=np.uint8)}  # about 10 kB an entry
    paths = [cache.save("t", f"k{i}", x) for i in range(2)]
    os.utime(paths[0], (1, 1))
    os.utime(paths[1], (2, 2))
    assert cache.load("t", "k0") is not None  # k0 used again: now the most recent
    cache.save("t", "k2", x)  # 30 kB > 25 kB: the least recently used (k1) goes
    assert cache.load("t", "k1") is None
    assert cache.load("t", "k0") is not None and cache.load("t", "k2") is not None


def test_dequantize_by_table_equals_dequantize():
    from tinycl.numerics import quant as Q
    g = torch.Generator().manual_seed(3)
    q = torch.randint(-128, 128, (37, 4, 3, 5), generator=g, dtype=torch.int64).to(torch.int8)
    for scale, zp in [(0.0123, -128), (1e-3, 7), (0.5, 127)]:
        got = S._dequantize(q, scale, zp, rows=5)
        assert torch.equal(got, Q.dequantize(q, scale, zp)) and got.is_contiguous()
