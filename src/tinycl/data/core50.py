"""CORe50 (Lomonaco & Maltoni, 2017) from its official files, with its official streams.

Files in ROOT (as distributed by the CORe50 authors):
    core50_imgs.npz  array 'x': N x 128 x 128 x 3 uint8, N = 164,866 (or core50_imgs.bin: the same
                     bytes raw, as the official loader writes it; read by memory map). Other
                     square sizes (the 32 x 32 "mini" version) are read the same way.
    paths.pkl        list of N relative paths, e.g. 's11/o1/C_11_01_000.png' (session, object)
    LUP.pkl          {scenario: [run][batch] -> list of image indices}; the last batch of a run
                     is the test set
    labels.pkl       {scenario: [run][batch] -> list of labels}, parallel to LUP.pkl; object
                     labels 0..49 (category = object // 5)
Scenarios and training batches: ni 8, nc 9, nic 79, nicv2_79 79, nicv2_196 196, nicv2_391 391;
10 runs (0..9) each. A scenario missing from LUP.pkl is read from its batch file lists instead:
ROOT/<dir>/run<r>/train_batch_<bb>_filelist.txt and test_filelist.txt, lines "path label", with
<dir> = NI_inc, NC_inc, NIC_inc under batches_filelists/, or NIC_v2_79/196/391.

Memory: the npz is read whole (about 8.1 GB for all images) and the train and test images of
the run are copied out of it; the .bin is memory-mapped, so only the copies are held.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from tinycl.data.stream import make_experience
from tinycl.data.dataset import Dataset, Split
from tinycl.errors import TinyclError

N_BATCHES = {"ni": 8, "nc": 9, "nic": 79, "nicv2_79": 79, "nicv2_196": 196, "nicv2_391": 391}
FILELIST_DIRS = {"ni": "batches_filelists/NI_inc", "nc": "batches_filelists/NC_inc",
                 "nic": "batches_filelists/NIC_inc", "nicv2_79": "NIC_v2_79",
                 "nicv2_196": "NIC_v2_196", "nicv2_391": "NIC_v2_391"}
N_RUNS = 10
CATEGORIES = ["plug_adapter", "mobile_phone", "scissors", "light_bulb", "can", "glasses", "ball",
              "marker", "cup", "remote_control"]
OBJECTS = [f"o{i}" for i in range(1, 51)]


def _pickle(path: Path):
    if not path.is_file():
        raise TinyclError(f"CORe50 file missing: {path}")
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")  # the official pickles come from Python 2
    except Exception as e:
        raise TinyclError(f"CORe50 file is corrupt or not a pickle: {path} ({type(e).__name__})") from None


def _images(root: Path, n: int) -> np.ndarray:
    """All images as an N x H x W x 3 uint8 array (memory-mapped when read from the .bin)."""
    npz, raw = root / "core50_imgs.npz", root / "core50_imgs.bin"
    if raw.is_file():  # square RGB images: 128 x 128 (or 32 x 32 for the mini version)
        size = raw.stat().st_size
        side = int(round((size / max(n, 1) / 3) ** 0.5))
        if size == 0 or size != n * side * side * 3:
            raise TinyclError(f"CORe50 file {raw} holds {size} bytes, not {n} square RGB images "
                              f"({n} = entries in paths.pkl)")
        return np.memmap(raw, dtype=np.uint8, mode="r", shape=(n, side, side, 3))
    if not npz.is_file():
        raise TinyclError(f"CORe50 file missing: {npz}")
    try:
        with np.load(npz, allow_pickle=False) as z:
            x = z["x"]
    except Exception as e:
        raise TinyclError(f"CORe50 file is corrupt: {npz} ({type(e).__name__})") from None
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] not in (1, 3) or x.shape[0] != n:
        raise TinyclError(f"CORe50 file {npz}: 'x' is {x.dtype} {x.shape}, expected {n} x H x W x 3 uint8 "
                          f"({n} = entries in paths.pkl)")
    return x


def _from_filelists(root: Path, scenario: str, run: int, level: str, paths: list[str]):
    """Batches (index lists) and labels of a run read from the official batch file lists."""
    folder = root / (FILELIST_DIRS[scenario] + ("_cat" if level == "category" else "")) / f"run{run}"
    if not folder.is_dir():
        raise TinyclError(f"CORe50: scenario '{scenario}' run {run} is not in LUP.pkl and its file lists are "
                          f"missing: {folder}")
    where = {p: i for i, p in enumerate(paths)}
    files = sorted(folder.glob("train_batch_*_filelist.txt"), key=lambda p: int(p.stem.split("_")[2]))
    files.append(folder / "test_filelist.txt")
    batches, labels = [], []
    for f in files:
        if not f.is_file():
            raise TinyclError(f"CORe50 file missing: {f}")
        idx, lab = [], []
        for k, line in enumerate(f.read_text().splitlines()):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or parts[0] not in where or not parts[1].lstrip("-").isdigit():
                raise TinyclError(f"CORe50 file {f} line {k + 1}: expected '<path in paths.pkl> <label>'")
            idx.append(where[parts[0]])
            lab.append(int(parts[1]))
        batches.append(idx)
        labels.append(lab)
    return batches, labels, False  # labels are already at the level of the chosen file lists


def _from_lup(root: Path, scenario: str, run: int):
    lup, lab = _pickle(root / "LUP.pkl"), _pickle(root / "labels.pkl")
    try:
        batches, labels = lup[scenario][run], lab[scenario][run]
    except (KeyError, IndexError, TypeError):
        return None
    return batches, labels, True


def load_core50(path: str | Path, scenario: str = "nicv2_391", run: int = 0, level: str = "object",
                test_every: int = 1) -> Dataset:
    """Load CORe50 for one official scenario and run.

    Returns a Dataset whose train split is the run's training batches in stream order and whose
    test split is the run's test set; `dataset.experiences` holds one Experience per training
    batch (train indices are contiguous ranges of the train split).
    level: "object" (50 classes) or "category" (10 classes, object // 5).
    test_every: keep every k-th test image (the AR1/latent-replay reference uses 20).
    """
    root = Path(path).expanduser()
    if scenario not in N_BATCHES:
        raise TinyclError(f"unknown CORe50 scenario '{scenario}'; known: {', '.join(N_BATCHES)}")
    if not 0 <= run < N_RUNS:
        raise TinyclError(f"CORe50 run must be in 0..{N_RUNS - 1}, got {run}")
    if level not in ("object", "category"):
        raise TinyclError(f"CORe50 level must be 'object' or 'category', got '{level}'")
    if test_every < 1:
        raise TinyclError(f"test_every must be >= 1, got {test_every}")
    if not root.is_dir():
        raise TinyclError(f"CORe50 folder not found: {root}")
    paths = _pickle(root / "paths.pkl")
    if not isinstance(paths, (list, tuple)):
        raise TinyclError(f"CORe50 file {root / 'paths.pkl'} is not a list of paths")
    got = _from_lup(root, scenario, run)
    batches, labels, object_labels = got if got is not None else _from_filelists(root, scenario, run, level, paths)
    if len(batches) < 2 or len(labels) != len(batches):
        raise TinyclError(f"CORe50 {scenario} run {run}: {len(batches)} index lists and {len(labels)} label "
                          f"lists; expected {N_BATCHES[scenario]} training batches + 1 test set each")
    n = len(paths)
    flat_idx, flat_lab = [], []
    for b, (idx, lab) in enumerate(zip(batches, labels)):
        idx, lab = np.asarray(idx, dtype=np.int64), np.asarray(lab, dtype=np.int64)
        if idx.shape != lab.shape or idx.ndim != 1:
            raise TinyclError(f"CORe50 {scenario} run {run} batch {b}: {idx.size} indices but {lab.size} labels")
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise TinyclError(f"CORe50 {scenario} run {run} batch {b}: image index outside 0..{n - 1}")
        if object_labels and level == "category":
            lab = lab // 5
        flat_idx.append(idx)
        flat_lab.append(lab)
    classes = CATEGORIES if level == "category" else OBJECTS
    x = _images(root, n)
    train_idx, train_y = np.concatenate(flat_idx[:-1]), np.concatenate(flat_lab[:-1])
    test_idx, test_y = flat_idx[-1][::test_every], flat_lab[-1][::test_every]

    def gather(idx):  # N x H x W x C -> N x C x H x W, copied out of the big array
        return torch.from_numpy(np.take(x, idx, axis=0)).permute(0, 3, 1, 2).contiguous()

    ds = Dataset(train=Split(gather(train_idx), torch.from_numpy(train_y)),
                 test=Split(gather(test_idx), torch.from_numpy(test_y)),
                 classes=list(classes), name=f"core50:{root}",
                 info={"scenario": scenario, "run": run, "level": level, "test_every": test_every})
    seen: set[int] = set()
    start, stream = 0, []
    for b, idx in enumerate(flat_idx[:-1]):
        stream.append(make_experience(b, np.arange(start, start + idx.size), test_y, train_y, seen))
        start += idx.size
    ds.experiences = stream
    return ds
