"""Any folder of images with one sub-folder per class (PNG or JPEG, any size and channel count).

Layouts:
    ROOT/<class>/*.png|jpg|jpeg                      -> a deterministic per-class train/test split
    ROOT/train/<class>/...  and  ROOT/test/<class>/... -> those splits as they are
Class labels are the sorted class folder names (0, 1, ...). Files with other extensions are ignored.
Options in a data spec: ``imagefolder:PATH?size=32x32&channels=3&test_fraction=0.2&seed=0``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from tinycl.data import cache
from tinycl.data.dataset import Dataset, Split
from tinycl.errors import TinyclError

EXTENSIONS = {".png", ".jpg", ".jpeg"}
_MODE_FOR_CHANNELS = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def natural_mode(img: Image.Image) -> str:
    """The PIL mode an image is read in when no channel count is asked: L, LA, RGB or RGBA."""
    m = img.mode
    if m in ("L", "LA", "RGB", "RGBA"):
        return m
    if m == "P":
        return "RGBA" if "transparency" in img.info else "RGB"
    if m == "PA":
        return "RGBA"
    if m in ("1", "I", "F") or m.startswith("I;"):
        return "L"
    return "RGB"  # CMYK, YCbCr, LAB, HSV


def decode_image(src, channels: int | None = None, size: tuple[int, int] | None = None,
                 what: str = "image") -> np.ndarray:
    """Decode one PNG/JPEG (a path or bytes) into an H x W x C uint8 array.

    channels: 1, 2, 3 or 4 to convert to (None keeps the file's own count);
    size: (H, W) to resize to (bilinear), None keeps the file's size.
    """
    try:
        fp = io.BytesIO(src) if isinstance(src, (bytes, bytearray, memoryview)) else src
        with Image.open(fp) as img:
            img.load()
            if img.mode in ("I", "F") or img.mode.startswith("I;"):
                # 16/32-bit grey: scale to 0..255 instead of PIL's clipping conversion
                a = np.asarray(img, dtype=np.float64)
                top = 65535.0 if img.mode.startswith("I;16") else max(float(a.max()), 1.0)
                img = Image.fromarray(np.clip(a * 255.0 / top, 0, 255).astype(np.uint8), "L")
            mode = _MODE_FOR_CHANNELS[channels] if channels else natural_mode(img)
            img = img.convert(mode) if img.mode != mode else img
            if size is not None and (img.height, img.width) != tuple(size):
                img = img.resize((int(size[1]), int(size[0])), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise TinyclError(f"cannot read {what}: {e.__class__.__name__}: {e}".splitlines()[0]) from None
    return arr[:, :, None] if arr.ndim == 2 else arr


def _class_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        raise TinyclError(f"image folder not found: {root}")
    folders = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.name)
    if not folders:
        raise TinyclError(f"image folder {root} has no class sub-folders (expected ROOT/<class>/*.png|jpg)")
    return folders


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)


def _list(root: Path, classes: list[str] | None = None) -> tuple[list[str], list[list[Path]]]:
    """Class names and, per class, its sorted image files; every class needs at least one image."""
    folders = _class_folders(root)
    names = [f.name for f in folders]
    if classes is not None and names != classes:
        raise TinyclError(f"{root}: class folders {names} differ from the train classes {classes}")
    files = [_images_in(f) for f in folders]
    for f, fs in zip(folders, files):
        if not fs:
            raise TinyclError(f"class folder has no PNG/JPEG images: {f}")
    return names, files


def _decode_all(paths: list[Path], channels, size) -> np.ndarray:
    """Decode files into one N x H x W x C array; mixed shapes need `size` / `channels`."""
    arrays = []
    for p in paths:
        a = decode_image(p, channels, size, what=str(p))
        if arrays and a.shape != arrays[0].shape:
            hint = "channels=C" if a.shape[2] != arrays[0].shape[2] else "size=HxW"
            raise TinyclError(f"image {p} is {a.shape[0]}x{a.shape[1]}x{a.shape[2]} but {paths[0]} is "
                              f"{'x'.join(map(str, arrays[0].shape))} (HxWxC); give {hint} to convert "
                              f"(--data 'imagefolder:PATH?{hint}', see docs/data.md)")
        arrays.append(a)
    return np.stack(arrays)


def load_imagefolder(path: str | Path, size: tuple[int, int] | None = None, channels: int | None = None,
                     test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Load an image folder (see the module docstring) as a Dataset.

    size: (H, W) to resize every image to; required when image sizes differ.
    channels: 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA); required when channel counts differ.
    test_fraction, seed: the per-class split when there is no train/ + test/ layout: each class's
        sorted files are permuted with `seed` and the first round(fraction * n) go to test
        (at least one when the class has two or more images).
    """
    root = Path(path).expanduser()
    if channels is not None and channels not in _MODE_FOR_CHANNELS:
        raise TinyclError(f"channels must be 1, 2, 3 or 4, got {channels}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise TinyclError(f"size must be (H, W) with H, W >= 1, got {size}")
    if not 0.0 <= test_fraction < 1.0:
        raise TinyclError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes, train_files = _list(root / "train")
        _, test_files = _list(root / "test", classes)
        tr = [(p, k) for k, fs in enumerate(train_files) for p in fs]
        te = [(p, k) for k, fs in enumerate(test_files) for p in fs]
    else:
        classes, files = _list(root)
        rng = np.random.default_rng(seed)
        tr, te = [], []
        for k, fs in enumerate(files):
            order = rng.permutation(len(fs))
            n_test = int(round(test_fraction * len(fs)))
            if test_fraction > 0 and len(fs) >= 2:
                n_test = min(max(n_test, 1), len(fs) - 1)
            te += [(fs[i], k) for i in sorted(order[:n_test])]
            tr += [(fs[i], k) for i in sorted(order[n_test:])]
    # decode train and test together so a shape mismatch between them is caught too
    pixels = cache.cached_file_array("imagefolder", [p for p, _ in tr + te], _decode_all, channels, size)
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    y = torch.tensor([k for _, k in tr + te], dtype=torch.int64)
    n = len(tr)
    train = Split(x=x[:n].contiguous(), y=y[:n].clone())
    test = Split(x=x[n:].contiguous(), y=y[n:].clone())
    return Dataset(train=train, test=test, classes=classes, name=f"imagefolder:{root}")
