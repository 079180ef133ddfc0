"""A tiny, learnable image folder for pipeline tests: 4 classes, 16x16 RGB, class = colour + stripe."""

from pathlib import Path

import numpy as np
from PIL import Image


def make_image_folder(root: Path, classes: int = 4, train: int = 24, test: int = 8, size: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("test", test)):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 60, (size, size, 3))
                img[..., c % 3] += 120
                img[(c * 3) % size:(c * 3) % size + 3, :, :] += 60
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"{i:03d}.png")
    return root


def tiny_config(folder, **overrides) -> dict:
    """A run config on the tiny image folder: tinycl-net cut at relu, 2 + 1 + 1 classes, small batches."""
    base = {"data": f"imagefolder:{folder}", "model": "tinycl-net", "backbone": "none", "latent_layer": "relu",
            "initial_classes": 2, "classes_per_experience": 1, "pretrain_epochs": 2, "epochs": 1,
            "batch_size": 8, "replay_batch": 8, "n_replays": 20, "lr_bits": 4, "learning_rate": 0.05,
            "seed": 0, "target": "vega"}
    return dict(base, **overrides)
