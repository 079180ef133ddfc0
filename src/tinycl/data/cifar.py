"""CIFAR-10 in its standard python-pickle folder (`cifar-10-batches-py`).

The folder holds data_batch_1..5 and test_batch (dicts with b"data": 10000 x 3072 uint8 rows,
R plane then G then B, each 32 x 32 row-major, and b"labels": list of ints) and batches.meta
(b"label_names"). Files are Python pickles: load only folders you trust.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from tinycl.data.dataset import Dataset, Split
from tinycl.errors import TinyclError

TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"
META_FILE = "batches.meta"


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise TinyclError(f"CIFAR-10 file missing: {path}")
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="bytes")
    except Exception as e:  # any unpickling failure means a damaged or foreign file
        raise TinyclError(f"CIFAR-10 file is corrupt or not a pickle: {path} ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise TinyclError(f"CIFAR-10 file is not a pickled dict: {path}")
    return obj


def _get(d: dict, key: str, path: Path):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise TinyclError(f"CIFAR-10 file {path} has no '{key}' entry")


def _read_batch(path: Path) -> Split:
    d = _unpickle(path)
    data, labels = _get(d, "data", path), _get(d, "labels", path)
    try:
        data = np.asarray(data, dtype=np.uint8)
        labels = np.asarray(labels, dtype=np.int64)
        x = data.reshape(-1, 3, 32, 32)
    except (ValueError, TypeError):
        raise TinyclError(f"CIFAR-10 file {path}: 'data' is not N x 3072 uint8") from None
    if data.ndim != 2 or x.shape[0] != labels.shape[0]:
        raise TinyclError(f"CIFAR-10 file {path}: {data.shape} data rows but {labels.shape[0]} labels")
    return Split(x=torch.from_numpy(x.copy()), y=torch.from_numpy(labels))


def find_folder(path: str | Path) -> Path:
    """The folder that holds the batches: PATH itself or PATH/cifar-10-batches-py."""
    p = Path(path).expanduser()
    if not p.exists():
        raise TinyclError(f"CIFAR-10 folder not found: {p}")
    if (p / META_FILE).exists() or not (p / "cifar-10-batches-py").is_dir():
        return p
    return p / "cifar-10-batches-py"


def load_cifar10(path: str | Path) -> Dataset:
    """Load CIFAR-10 from a `cifar-10-batches-py` folder (or its parent): 50000 train, 10000 test."""
    folder = find_folder(path)
    meta = _unpickle(folder / META_FILE)
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in _get(meta, "label_names", folder / META_FILE)]
    parts = [_read_batch(folder / f) for f in TRAIN_FILES]
    train = Split(x=torch.cat([p.x for p in parts]), y=torch.cat([p.y for p in parts]))
    test = _read_batch(folder / TEST_FILE)
    return Dataset(train=train, test=test, classes=names, name=f"cifar10:{folder}")
