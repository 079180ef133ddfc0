"""tinycl.data.core50 on a small fake in the official file format."""

import pickle

import numpy as np
import pytest
import torch

from tinycl.data.core50 import load_core50
from tinycl.data import load
from tinycl.errors import TinyclError

N_OBJ, N_SESS, N_FRAMES = 10, 4, 3  # sessions 1..3 train, 4 test


def _write_fake(root, scenarios=("nc", "ni"), n_runs=2, with_npz=True):
    """core50_imgs.npz, paths.pkl, LUP.pkl, labels.pkl. Image i has pixel values that encode i
    (channel 0 = i % 256, channel 1 = i // 256), so tests can tell which image they got."""
    root.mkdir(parents=True, exist_ok=True)
    paths = [f"s{s}/o{o}/C_{s:02d}_{o:02d}_{f:03d}.png"
             for s in range(1, N_SESS + 1) for o in range(1, N_OBJ + 1) for f in range(N_FRAMES)]
    n = len(paths)
    x = np.zeros((n, 8, 8, 3), np.uint8)
    x[:, :, :, 0] = (np.arange(n) % 256)[:, None, None]
    x[:, :, :, 1] = (np.arange(n) // 256)[:, None, None]
    x[:, :, :, 2] = 7
    if with_npz:
        np.savez(root / "core50_imgs.npz", x=x)
    obj = np.array([int(p.split("/")[1][1:]) - 1 for p in paths])
    sess = np.array([int(p.split("/")[0][1:]) for p in paths])
    rng = np.random.default_rng(0)
    lup, labels = {}, {}
    for scen in scenarios:
        lup[scen], labels[scen] = [], []
        for r in range(n_runs):
            train = np.flatnonzero(sess < N_SESS)
            test = np.flatnonzero(sess == N_SESS)
            if scen == "nc":  # batches of objects: 4, then 3, then 3
                order = rng.permutation(N_OBJ)
                groups = [order[:4], order[4:7], order[7:]]
                batches = [train[np.isin(obj[train], g)] for g in groups]
            else:  # ni: one batch per training session
                batches = [train[sess[train] == s] for s in range(1, N_SESS)]
            batches = [rng.permutation(b) for b in batches] + [test]
            lup[scen].append([[int(i) for i in b] for b in batches])
            labels[scen].append([[int(obj[i]) for i in b] for b in batches])
    for name, obj_ in (("paths.pkl", paths), ("LUP.pkl", lup), ("labels.pkl", labels)):
        with open(root / name, "wb") as f:
            pickle.dump(obj_, f, protocol=2)
    return x, paths, lup, labels


def _index_of(images: torch.Tensor) -> np.ndarray:
    """Recover the original image index from the encoded pixels (N x C x H x W)."""
    return (images[:, 0, 0, 0].long() + 256 * images[:, 1, 0, 0].long()).numpy()


def test_nc_run_follows_lup_and_keeps_labels_with_images(tmp_path):
    _, paths, lup, labels = _write_fake(tmp_path)
    ds = load_core50(tmp_path, scenario="nc", run=1)
    assert ds.classes[:2] == ["o1", "o2"] and len(ds.classes) == 50
    assert ds.image_shape == (3, 8, 8)
    assert len(ds.experiences) == 3
    for e, batch in zip(ds.experiences, lup["nc"][1][:-1]):
        got = _index_of(ds.train.x[e.train_idx])
        assert got.tolist() == batch  # same images, same order as LUP
        # each label is the object in the image's path (o<k> -> k-1)
        want = [int(paths[i].split("/")[1][1:]) - 1 for i in got]
        assert ds.train.y[e.train_idx].tolist() == want
    assert _index_of(ds.test.x).tolist() == lup["nc"][1][-1]
    assert [len(e.new_classes) for e in ds.experiences] == [4, 3, 3]
    # test sets of the experiences: test images of their new classes, disjoint, covering all
    tidx = torch.cat([e.test_idx for e in ds.experiences]).sort().values
    assert torch.equal(tidx, torch.arange(len(ds.test)))
    for e in ds.experiences:
        assert set(ds.test.y[e.test_idx].tolist()) == set(e.new_classes)


def test_ni_category_level_and_test_subsample(tmp_path):
    _write_fake(tmp_path)
    ds = load("core50:" + str(tmp_path), scenario="ni", run=0, level="category", test_every=4)
    assert len(ds.classes) == 10 and ds.classes[0] == "plug_adapter"
    assert sorted(set(ds.train.y.tolist())) == [0, 1]  # objects 0..9 -> categories 0, 1
    assert len(ds.test) == 30 // 4 + 1  # every 4th of the 30 test images: 0, 4, ..., 28
    idx = _index_of(ds.test.x)
    assert (ds.test.y.numpy() == (idx % (N_OBJ * N_FRAMES)) // N_FRAMES // 5).all()
    assert [e.new_classes for e in ds.experiences] == [[0, 1], [], []]
    assert len(ds.experiences[1].test_idx) == 0


def test_filelist_fallback_and_bin_memmap(tmp_path):
    x, paths, _, _ = _write_fake(tmp_path, scenarios=("nc",), with_npz=False)
    x.tofile(tmp_path / "core50_imgs.bin")  # raw bytes, as the official loader caches them
    folder = tmp_path / "NIC_v2_391" / "run3"
    folder.mkdir(parents=True)
    chosen = [[5, 1, 7], [40], [41, 2]]
    for b, idx in enumerate(chosen):
        lines = [f"{paths[i]} {int(paths[i].split('/')[1][1:]) - 1}" for i in idx]
        (folder / f"train_batch_{b:02d}_filelist.txt").write_text("\n".join(lines) + "\n")
    (folder / "test_filelist.txt").write_text(f"{paths[100]} 3\n{paths[101]} 3\n")
    ds = load_core50(tmp_path, scenario="nicv2_391", run=3)
    assert [_index_of(ds.train.x[e.train_idx]).tolist() for e in ds.experiences] == chosen
    assert ds.train.y.tolist() == [1, 0, 2, 3, 3, 0]
    assert ds.test.y.tolist() == [3, 3]
    (folder / "test_filelist.txt").write_text("not/a/known/path.png 3\n")
    with pytest.raises(TinyclError, match="test_filelist.txt line 1"):
        load_core50(tmp_path, scenario="nicv2_391", run=3)
    with pytest.raises(TinyclError, match="NIC_v2_196"):
        load_core50(tmp_path, scenario="nicv2_196", run=0)


@pytest.mark.parametrize("victim", ["core50_imgs.npz", "paths.pkl", "LUP.pkl", "labels.pkl"])
def test_missing_or_corrupt_file_is_named(tmp_path, victim):
    _write_fake(tmp_path)
    (tmp_path / victim).unlink()
    with pytest.raises(TinyclError, match=f"missing.*{victim}"):
        load_core50(tmp_path, scenario="nc")
    (tmp_path / victim).write_bytes(b"garbage that is not the format")
    with pytest.raises(TinyclError, match=f"corrupt.*{victim}"):
        load_core50(tmp_path, scenario="nc")


def test_bad_arguments_and_inconsistent_files(tmp_path):
    _, _, lup, labels = _write_fake(tmp_path)
    with pytest.raises(TinyclError, match="unknown CORe50 scenario"):
        load_core50(tmp_path, scenario="nicv3")
    with pytest.raises(TinyclError, match="run"):
        load_core50(tmp_path, scenario="nc", run=10)
    with pytest.raises(TinyclError, match="level"):
        load_core50(tmp_path, scenario="nc", level="colour")
    labels["nc"][0][1] = labels["nc"][0][1][:-1]
    with open(tmp_path / "labels.pkl", "wb") as f:
        pickle.dump(labels, f)
    with pytest.raises(TinyclError, match="batch 1"):
        load_core50(tmp_path, scenario="nc", run=0)
    lup["nc"][0][0][0] = 10_000
    with open(tmp_path / "LUP.pkl", "wb") as f:
        pickle.dump(lup, f)
    with pytest.raises(TinyclError, match="outside"):
        load_core50(tmp_path, scenario="nc", run=0)
