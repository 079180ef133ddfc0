"""ETA accuracy evidence: FP32 vs the int8 policy at equal epochs, large and small batch, several seeds.

CIFAR-10 from the shared archive, extracted under /tmp (never the repo). A class-balanced subset
(``--train-per-class`` first files of each class in sorted order; ``--test-per-class`` likewise)
keeps the run affordable on 2 shared CPU cores. Models use RangeNorm2d (tinycl.models.rangenorm)
in place of BatchNorm so that batch 1 is possible and every configuration has the same network.

Example (what docs/eta.md reports):
  nice -n 10 .venv/bin/python bench/eta_accuracy.py --data /tmp/g_cifar --out /tmp/g_eta.json
(defaults: 100 train + 100 test images per class, 4 epochs, batch 32 at lr 0.02 and batch 1 at
lr 0.002, SGD momentum 0.9, weight decay 5e-4, random flips, seeds 0 and 1, RangeNorm2d l1 groups 8)
Writes a JSON list of runs and prints a markdown table (mean and spread over seeds).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import tinycl.numerics.blockfp  # noqa: F401  (registers the int8 policy)
from tinycl.data.imagefolder import decode_image
from tinycl.kernels.optim import SGD
from tinycl.models.convert import from_torch
from tinycl.models.rangenorm import range_norm
from tinycl.models.registry import create

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def load_subset(root: Path, split: str, per_class: int):
    cache = root / f"subset_{split}_{per_class}.npz"
    if cache.exists():
        d = np.load(cache)
        return d["x"], d["y"]
    xs, ys = [], []
    for label, name in enumerate(CLASSES):
        files = sorted((root / split / name).glob("*.jpg"))[:per_class]
        xs += [decode_image(str(f), channels=3, size=(32, 32)) for f in files]
        ys += [label] * len(files)
    x, y = np.stack(xs), np.array(ys, dtype=np.int64)
    np.savez(cache, x=x, y=y)
    return x, y


def to_tensor(x):
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0
    return (t - 0.5) / 0.25


def build(model: str, width: float, seed: int):
    torch.manual_seed(seed)
    kw = {"width": width} if model == "vgg-cifar" else {}
    return create(model, norm_layer=range_norm(8), **kw)


def lr_at(lr, step, total, schedule):
    """Learning rate at ``step`` of ``total``: constant, or cosine decay from ``lr`` to 0."""
    return lr if schedule == "constant" else 0.5 * lr * (1 + math.cos(math.pi * step / total))


def run_one(model, width, precision, batch, lr, epochs, seed, xtr, ytr, xte, yte, schedule="constant"):
    net = from_torch(build(model, width, seed), (3, 32, 32), precision=precision)
    net.generator = torch.Generator().manual_seed(seed + 1000)
    opt = SGD(lr=lr, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(seed)
    t0 = time.time()
    losses = []
    step, total_steps = 0, epochs * math.ceil(len(xtr) / batch)
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=g)
        total = 0.0
        for i in range(0, len(xtr), batch):
            opt.lr = lr_at(lr, step, total_steps, schedule)
            step += 1
            idx = perm[i:i + batch]
            xb = xtr[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5
            xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(-1), xb)
            total += net.train_step(xb, ytr[idx], opt) * len(idx)
        losses.append(total / len(xtr))
    # evaluate in chunks of the training batch: int8bfp shares one activation scale per tensor, so a
    # device that trains at batch B also infers at batch B (at batch 1 the scale is per sample)
    acc = (net.predict(xte, batch).argmax(1) == yte).float().mean().item() * 100
    return {"model": model, "width": width, "precision": precision, "batch": batch, "lr": lr, "epochs": epochs,
            "seed": seed, "schedule": schedule, "train_images": len(xtr), "test_images": len(xte),
            "eval_batch": batch, "test_acc": acc, "train_loss": losses, "seconds": time.time() - t0}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/tmp/g_cifar")
    ap.add_argument("--out", default="/tmp/g_eta.json")
    ap.add_argument("--models", default="resnet20,vgg-cifar")
    ap.add_argument("--vgg-width", type=float, default=0.25)
    ap.add_argument("--batches", default="32:0.02,1:0.002", help="batch:lr pairs")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--train-per-class", type=int, default=100)
    ap.add_argument("--test-per-class", type=int, default=100)
    ap.add_argument("--schedule", choices=["constant", "cosine"], default="constant")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    root = Path(a.data)
    xtr, ytr = load_subset(root, "train", a.train_per_class)
    xte, yte = load_subset(root, "test", a.test_per_class)
    xtr, xte = to_tensor(xtr), to_tensor(xte)
    ytr, yte = torch.from_numpy(ytr), torch.from_numpy(yte)
    out = Path(a.out)
    runs = json.loads(out.read_text()) if out.exists() else []
    done = {(r["model"], r["precision"], r["batch"], r["seed"]) for r in runs}
    for seed in map(int, a.seeds.split(",")):      # seeds outermost: partial output is still paired
        for model in a.models.split(","):
            for pair in a.batches.split(","):
                batch, lr = int(pair.split(":")[0]), float(pair.split(":")[1])
                for prec in a.precisions.split(","):
                    if (model, prec, batch, seed) in done:
                        continue
                    r = run_one(model, a.vgg_width, prec, batch, lr, a.epochs, seed, xtr, ytr, xte, yte, a.schedule)
                    runs.append(r)
                    out.write_text(json.dumps(runs, indent=1))
                    print(f"{model} {prec} b{batch} seed{seed}: {r['test_acc']:.2f}% in {r['seconds']:.0f}s",
                          flush=True)
    print(table(runs))


def table(runs):
    rows = ["| model | batch | FP32 acc % (mean, per seed) | int8 acc % (mean, per seed) | int8 - FP32 |",
            "|---|---|---|---|---|"]
    keys = sorted({(r["model"], r["batch"]) for r in runs}, key=lambda k: (k[0], -k[1]))
    for model, batch in keys:
        acc = {p: [r["test_acc"] for r in runs if (r["model"], r["batch"], r["precision"]) == (model, batch, p)]
               for p in ("fp32", "int8")}
        if not acc["fp32"] or not acc["int8"]:
            continue
        f, i = statistics.mean(acc["fp32"]), statistics.mean(acc["int8"])
        fmt = lambda v: ", ".join(f"{x:.1f}" for x in v)  # noqa: E731
        rows.append(f"| {model} | {batch} | {f:.2f} ({fmt(acc['fp32'])}) | {i:.2f} ({fmt(acc['int8'])}) | {i - f:+.2f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
