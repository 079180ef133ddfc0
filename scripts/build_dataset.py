#!/usr/bin/env python
"""Build the small CIFAR-10 subset shipped inside tinycl (src/tinycl/data/assets/).

Reads the JPEG tarball (train/<class>/NNNN.jpg, test/<class>/NNNN.jpg), keeps the first
`--train-per-class` and `--test-per-class` files of each class by sorted file name, and packs
their original JPEG bytes (not re-encoded) into one deterministic .npz:

    jpeg     uint8  all JPEG files concatenated
    offsets  int64  N+1 byte offsets into `jpeg` (image i is jpeg[offsets[i]:offsets[i+1]])
    labels   uint8  N labels 0..9
    split    uint8  N, 0 = train, 1 = test
    classes  str    the 10 class names, label order

The zip entries have a fixed time stamp so the same input gives the same bytes and SHA-256.
The SHA-256 is also written beside the asset (<name>.sha256) and checked when tinycl loads it.

Usage: python scripts/build_dataset.py [TARBALL] [--out DIR] [--train-per-class N] [--test-per-class N]
TARBALL defaults to ../shared/data/cifar10-images.tar.gz relative to the repository root.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TARBALL = REPO.parent / "shared" / "data" / "cifar10-images.tar.gz"
DEFAULT_OUT = REPO / "src" / "tinycl" / "data" / "assets"
ASSET_NAME = "cifar10_subset.npz"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SPLITS = ["train", "test"]


def read_tarball(path: Path) -> dict[tuple[str, str], dict[str, bytes]]:
    """Return {(split, class): {file name: JPEG bytes}} for every .jpg in the tarball."""
    files: dict[tuple[str, str], dict[str, bytes]] = {}
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            if not member.isfile() or not member.name.lower().endswith(".jpg"):
                continue
            parts = Path(member.name).parts
            if len(parts) < 3 or parts[-3] not in SPLITS or parts[-2] not in CLASSES:
                continue
            data = tar.extractfile(member).read()
            files.setdefault((parts[-3], parts[-2]), {})[parts[-1]] = data
    return files


def select(files, per_split: dict[str, int]):
    """Fixed selection: the first n files of each (split, class) by sorted name."""
    blobs, labels, split_ids = [], [], []
    for s, split in enumerate(SPLITS):
        for label, cls in enumerate(CLASSES):
            names = sorted(files.get((split, cls), {}))
            n = per_split[split]
            if len(names) < n:
                raise SystemExit(f"error: {split}/{cls} has {len(names)} images, {n} needed")
            for name in names[:n]:
                blobs.append(files[(split, cls)][name])
                labels.append(label)
                split_ids.append(s)
    return blobs, labels, split_ids


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """A deflated .npz (readable by numpy.load) with fixed time stamps, so it is reproducible."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compresslevel=9)
    return buf.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tarball", nargs="?", default=str(DEFAULT_TARBALL))
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder")
    ap.add_argument("--train-per-class", type=int, default=1000)
    ap.add_argument("--test-per-class", type=int, default=200)
    args = ap.parse_args(argv)

    tarball = Path(args.tarball)
    if not tarball.is_file():
        print(f"error: tarball not found: {tarball}", file=sys.stderr)
        return 1
    files = read_tarball(tarball)
    blobs, labels, split_ids = select(files, {"train": args.train_per_class, "test": args.test_per_class})
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    arrays = {
        "jpeg": np.frombuffer(b"".join(blobs), dtype=np.uint8),
        "offsets": offsets,
        "labels": np.asarray(labels, dtype=np.uint8),
        "split": np.asarray(split_ids, dtype=np.uint8),
        "classes": np.asarray(CLASSES),
    }
    data = npz_bytes(arrays)
    digest = hashlib.sha256(data).hexdigest()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ASSET_NAME).write_bytes(data)
    (out / (ASSET_NAME + ".sha256")).write_text(f"{digest}  {ASSET_NAME}\n")
    n_train = sum(1 for s in split_ids if s == 0)
    print(f"images: {len(blobs)} ({n_train} train, {len(blobs) - n_train} test), 10 classes")
    print(f"JPEG payload: {int(offsets[-1])} bytes; file: {len(data)} bytes "
          f"({len(data) / len(blobs):.1f} bytes/image)")
    print(f"sha256: {digest}")
    print(f"wrote {out / ASSET_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
