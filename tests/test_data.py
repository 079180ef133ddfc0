"""tinycl.data: CIFAR-10 pickle folder, image folder, shipped subset, build script, load(spec)."""

import hashlib
import io
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from PIL import Image

from tinycl.data import Dataset, Split, load, load_cifar10, load_imagefolder, load_shipped
from tinycl.errors import TinyclError

REPO = Path(__file__).resolve().parents[1]
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TARBALL = REPO.parent / "shared" / "data" / "cifar10-images.tar.gz"


# ---------------------------------------------------------------- CIFAR-10 pickle folder

def _write_cifar(folder: Path, n_per_batch=3, seed=0):
    """A tiny cifar-10-batches-py folder; returns the HWC images and labels written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    imgs, labels = {}, {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        hwc = rng.integers(0, 256, (n_per_batch, 32, 32, 3), dtype=np.uint8)
        lab = [int(v) for v in rng.integers(0, 10, n_per_batch)]
        # CIFAR row layout: 1024 R values, then 1024 G, then 1024 B, each plane row-major
        rows = np.stack([np.concatenate([im[:, :, c].ravel() for c in range(3)]) for im in hwc])
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rows, b"labels": lab, b"batch_label": name.encode()}, f)
        imgs[name], labels[name] = hwc, lab
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR_CLASSES], b"num_vis": 3072}, f)
    return imgs, labels


def test_cifar10_pixels_labels_and_order(tmp_path):
    imgs, labels = _write_cifar(tmp_path / "cifar-10-batches-py")
    for path in (tmp_path / "cifar-10-batches-py", tmp_path):  # the folder or its parent
        ds = load_cifar10(path)
        assert ds.classes == CIFAR_CLASSES
        assert ds.train.x.shape == (15, 3, 32, 32) and ds.test.x.shape == (3, 3, 32, 32)
        assert ds.train.x.dtype == torch.uint8 and ds.train.y.dtype == torch.int64
        # the 4th training image is the 1st of data_batch_2; red plane = channel 0
        assert torch.equal(ds.train.x[3], torch.from_numpy(imgs["data_batch_2"][0]).permute(2, 0, 1))
        assert ds.train.x[7, 0, 5, 9] == imgs["data_batch_3"][1][5, 9, 0]
        assert ds.train.x[7, 2, 31, 0] == imgs["data_batch_3"][1][31, 0, 2]
        assert ds.train.y.tolist() == sum((labels[f"data_batch_{i}"] for i in range(1, 6)), [])
        assert ds.test.y.tolist() == labels["test_batch"]


@pytest.mark.parametrize("victim", ["data_batch_3", "test_batch", "batches.meta"])
def test_cifar10_missing_or_corrupt_file_is_named(tmp_path, victim):
    folder = tmp_path / "c"
    _write_cifar(folder)
    (folder / victim).unlink()
    with pytest.raises(TinyclError, match=f"missing.*{victim}"):
        load_cifar10(folder)
    (folder / victim).write_bytes(b"\x80\x04 this is not a pickle")
    with pytest.raises(TinyclError, match=f"corrupt.*{victim}"):
        load_cifar10(folder)


def test_cifar10_bad_shapes_and_missing_folder(tmp_path):
    folder = tmp_path / "c"
    _write_cifar(folder)
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}, f)
    with pytest.raises(TinyclError, match="data_batch_1"):
        load_cifar10(folder)
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(TinyclError, match="data_batch_1"):
        load_cifar10(folder)
    with pytest.raises(TinyclError, match="not found"):
        load_cifar10(tmp_path / "nope")


# ---------------------------------------------------------------- image folder

def _save(path: Path, arr: np.ndarray, fmt="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
    Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr, mode).save(path, fmt)


def _make_folder(root: Path, counts=(5, 3, 4), shape=(6, 7, 3), seed=0):
    rng = np.random.default_rng(seed)
    written = {}
    for k, n in enumerate(counts):
        for i in range(n):
            a = rng.integers(0, 256, shape, dtype=np.uint8)
            p = root / f"class_{'cba'[k]}" / f"img{i}.png"
            _save(p, a)
            written[p] = a
    (root / "class_c" / "notes.txt").write_text("ignored")
    return written


def test_imagefolder_labels_pixels_and_deterministic_split(tmp_path):
    written = _make_folder(tmp_path)
    ds = load_imagefolder(tmp_path, test_fraction=0.25)
    assert ds.classes == ["class_a", "class_b", "class_c"]  # sorted names -> labels 0, 1, 2
    assert len(ds.train) + len(ds.test) == 12 and ds.image_shape == (3, 6, 7)
    # per class: round(0.25 * n) test images, at least one: a=4 -> 1, b=3 -> 1, c=5 -> 1
    assert torch.bincount(ds.test.y, minlength=3).tolist() == [1, 1, 1]
    # every written image appears exactly once, with the label of its folder
    pool = [(x, int(y)) for s in (ds.train, ds.test) for x, y in zip(s.x, s.y)]
    for p, a in written.items():
        want = torch.from_numpy(a).permute(2, 0, 1)
        hits = [y for x, y in pool if torch.equal(x, want)]
        assert hits == [ds.classes.index(p.parent.name)]
    again = load_imagefolder(tmp_path, test_fraction=0.25)
    assert torch.equal(again.test.x, ds.test.x) and torch.equal(again.train.y, ds.train.y)
    other = [load_imagefolder(tmp_path, test_fraction=0.25, seed=s).test.x for s in range(1, 6)]
    assert any(not torch.equal(o, ds.test.x) for o in other)


def test_imagefolder_train_test_layout(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    _save(tmp_path / "train" / "dog" / "1.png", a)
    _save(tmp_path / "train" / "cat" / "1.png", b)
    _save(tmp_path / "train" / "cat" / "2.png", a)
    _save(tmp_path / "test" / "cat" / "9.png", b)
    _save(tmp_path / "test" / "dog" / "9.png", a)
    ds = load_imagefolder(tmp_path)
    assert ds.classes == ["cat", "dog"]
    assert ds.train.y.tolist() == [0, 0, 1] and ds.test.y.tolist() == [0, 1]
    assert torch.equal(ds.test.x[0], torch.from_numpy(b).permute(2, 0, 1))
    (tmp_path / "test" / "dog" / "9.png").unlink()
    (tmp_path / "test" / "dog").rmdir()
    with pytest.raises(TinyclError, match="differ"):
        load_imagefolder(tmp_path)


def test_imagefolder_sizes_and_channels(tmp_path):
    grey = np.full((8, 10, 1), 77, np.uint8)
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 200
    _save(tmp_path / "a" / "grey.png", grey)
    _save(tmp_path / "b" / "rgb.png", rgb)
    with pytest.raises(TinyclError, match="rgb.png|grey.png"):
        load_imagefolder(tmp_path, test_fraction=0.0)
    ds = load_imagefolder(tmp_path, size=(5, 5), channels=3, test_fraction=0.0)
    assert ds.image_shape == (3, 5, 5)
    # grey -> RGB replicates the grey value; a constant image stays constant when resized
    assert ds.train.x[0].unique().tolist() == [77]
    assert ds.train.x[1, 0].unique().tolist() == [200] and ds.train.x[1, 1:].unique().tolist() == [0]
    ds1 = load_imagefolder(tmp_path, size=(5, 5), channels=1, test_fraction=0.0)
    assert ds1.image_shape == (1, 5, 5)
    # ITU-R 601 luma of (200, 0, 0): 200 * 299 / 1000 = 59.8 -> 59 or 60
    assert int(ds1.train.x[1].float().mean().round()) in (59, 60)


@settings(max_examples=12, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), c=st.sampled_from([1, 3, 4]), seed=st.integers(0, 99))
def test_imagefolder_png_roundtrip_any_shape(tmp_path_factory, h, w, c, seed):
    root = tmp_path_factory.mktemp("odd")
    a = np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)
    _save(root / "only" / "x.png", a)
    ds = load_imagefolder(root)
    assert len(ds.train) == 1 and len(ds.test) == 0  # one image: nothing to split off
    assert torch.equal(ds.train.x[0], torch.from_numpy(a).permute(2, 0, 1))


def test_imagefolder_jpeg_is_read(tmp_path):
    a = np.full((16, 16, 3), (10, 120, 240), np.uint8)
    _save(tmp_path / "k" / "x.JPG", a, fmt="JPEG")
    ds = load_imagefolder(tmp_path)
    assert ds.image_shape == (3, 16, 16)
    assert (ds.train.x[0].float().mean((1, 2)) - torch.tensor([10.0, 120.0, 240.0])).abs().max() < 4


def test_imagefolder_errors_name_the_problem(tmp_path):
    with pytest.raises(TinyclError, match="not found"):
        load_imagefolder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TinyclError, match="no class sub-folders"):
        load_imagefolder(tmp_path / "empty")
    root = tmp_path / "r"
    _make_folder(root)
    (root / "zzz_empty").mkdir()
    with pytest.raises(TinyclError, match="zzz_empty"):
        load_imagefolder(root)
    (root / "zzz_empty").rmdir()
    (root / "class_b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(TinyclError, match="broken.png"):
        load_imagefolder(root)
    (root / "class_b" / "broken.png").unlink()
    _save(root / "class_a" / "big.png", np.zeros((9, 9, 3), np.uint8))
    with pytest.raises(TinyclError, match="big.png.*size="):
        load_imagefolder(root)
    assert load_imagefolder(root, size=(6, 7)).image_shape == (3, 6, 7)
    with pytest.raises(TinyclError, match="channels"):
        load_imagefolder(root, channels=5)


# ---------------------------------------------------------------- Dataset checks

def test_dataset_rejects_bad_tensors():
    x = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    ok = Split(x, torch.tensor([0, 1]))
    with pytest.raises(TinyclError, match="uint8"):
        Dataset(Split(x.float(), torch.tensor([0, 1])), ok, ["a", "b"])
    with pytest.raises(TinyclError, match="2 images but 3 labels"):
        Dataset(Split(x, torch.tensor([0, 1, 1])), ok, ["a", "b"])
    with pytest.raises(TinyclError, match=r"0\.\.1"):
        Dataset(Split(x, torch.tensor([0, 2])), ok, ["a", "b"])
    ds = Dataset(ok, ok, ["a", "b"])
    assert ds.nbytes() == 2 * (2 * 3 * 4 * 4 + 2 * 8)


# ---------------------------------------------------------------- shipped subset + build script

@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYCL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_shipped_subset_is_balanced_small_and_checksummed(cache):
    asset = REPO / "src" / "tinycl" / "data" / "assets" / "cifar10_subset.npz"
    assert asset.stat().st_size <= 8 * 2**20
    sha = (asset.parent / (asset.name + ".sha256")).read_text().split()[0]
    assert hashlib.sha256(asset.read_bytes()).hexdigest() == sha
    ds = load("shipped")
    assert ds.classes == CIFAR_CLASSES and ds.image_shape == (3, 32, 32)
    assert torch.bincount(ds.train.y).tolist() == [1000] * 10
    assert torch.bincount(ds.test.y).tolist() == [200] * 10
    assert 60 < ds.train.x.float().mean() < 200  # real photos, not blank
    assert list(cache.glob("shipped-*.npy"))
    again = load_shipped()  # from the cache
    assert torch.equal(again.train.x, ds.train.x) and torch.equal(again.test.y, ds.test.y)
    fresh = load_shipped(use_cache=False)
    assert torch.equal(fresh.test.x, ds.test.x)


@pytest.mark.skipif(not TARBALL.is_file(), reason="shared tarball not present")
def test_shipped_first_test_image_is_the_tarballs(cache):
    with tarfile.open(TARBALL, "r:gz") as tar:
        for m in tar:
            if m.name.endswith("test/airplane/0000.jpg"):
                raw = tar.extractfile(m).read()
                break
    want = np.array(Image.open(io.BytesIO(raw)).convert("RGB"))
    assert torch.equal(load_shipped().test.x[0], torch.from_numpy(want).permute(2, 0, 1))


def _fake_tarball(path: Path, per_class=3):
    """A tarball laid out like the shared one, files added in reverse name order."""
    rng = np.random.default_rng(5)
    pixels = {}
    with tarfile.open(path, "w:gz") as tar:
        for split in ("test", "train"):
            for cls in CIFAR_CLASSES:
                for i in reversed(range(per_class)):
                    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                    buf = io.BytesIO()
                    Image.fromarray(a).save(buf, "JPEG", quality=90)
                    data = buf.getvalue()
                    info = tarfile.TarInfo(f"{split}/{cls}/{i:04d}.jpg")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                    pixels[(split, cls, i)] = np.array(Image.open(io.BytesIO(data)).convert("RGB"))
    return pixels


def test_build_script_is_deterministic_and_loadable(tmp_path, cache):
    pixels = _fake_tarball(tmp_path / "fake.tar.gz")
    outs = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        r = subprocess.run([sys.executable, str(REPO / "scripts" / "build_dataset.py"), str(tmp_path / "fake.tar.gz"),
                            "--out", str(out), "--train-per-class", "2", "--test-per-class", "1"],
                           capture_output=True, text=True, check=True)
        assert "sha256:" in r.stdout
        outs.append((out / "cifar10_subset.npz").read_bytes())
    assert outs[0] == outs[1]
    ds = load_shipped(tmp_path / "out0" / "cifar10_subset.npz")
    assert ds.train.y.tolist() == [k for k in range(10) for _ in range(2)]
    # first files by sorted name: train/<class>/0000 and 0001, test/<class>/0000
    assert torch.equal(ds.train.x[3], torch.from_numpy(pixels[("train", "automobile", 1)]).permute(2, 0, 1))
    assert torch.equal(ds.test.x[9], torch.from_numpy(pixels[("test", "truck", 0)]).permute(2, 0, 1))


def test_shipped_damaged_or_missing_file(tmp_path, cache):
    asset = REPO / "src" / "tinycl" / "data" / "assets" / "cifar10_subset.npz"
    bad = tmp_path / "cifar10_subset.npz"
    data = bytearray(asset.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    (tmp_path / "cifar10_subset.npz.sha256").write_text((asset.parent / (asset.name + ".sha256")).read_text())
    with pytest.raises(TinyclError, match="damaged"):
        load_shipped(bad)
    (tmp_path / "cifar10_subset.npz.sha256").unlink()
    bad.write_bytes(asset.read_bytes()[:1000])  # truncated, no checksum to compare
    with pytest.raises(TinyclError, match="damaged"):
        load_shipped(bad)
    with pytest.raises(TinyclError, match="missing"):
        load_shipped(tmp_path / "nothing.npz")


# ---------------------------------------------------------------- load(spec)

def test_load_spec_dispatch_and_errors(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py")
    assert len(load(f"cifar10:{tmp_path}").train) == 15
    _make_folder(tmp_path / "imgs")
    assert load(f"imagefolder:{tmp_path / 'imgs'}", size=(3, 3)).image_shape == (3, 3, 3)
    with pytest.raises(TinyclError, match="unknown data kind 'mnist'"):
        load("mnist:/x")
    with pytest.raises(TinyclError, match="needs a path"):
        load("cifar10")
    with pytest.raises(TinyclError, match="bad option"):
        load(f"imagefolder:{tmp_path / 'imgs'}", colour=True)
    with pytest.raises(TinyclError, match="CORe50 folder not found"):
        load(f"core50:{tmp_path / 'none'}")
    with pytest.raises(TinyclError):
        load("")
