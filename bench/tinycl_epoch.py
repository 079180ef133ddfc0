"""Epoch time of tinycl's own training engine on the TinyCL model (tinycl-net, CIFAR-10 sized).

Times ``steps`` training steps (forward, cross-entropy, backward, SGD) at a batch size on
random 3x32x32 inputs (the time does not depend on pixel values) and extrapolates to a
50 000-sample epoch: epoch_s = (time per step) x 50 000 / batch. Said so in the output.

    .venv/bin/python bench/tinycl_epoch.py                 # batch 1 and 64, 1 thread
    .venv/bin/python bench/tinycl_epoch.py --batch 1 --samples 5000 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from tinycl import from_torch
from tinycl.kernels.optim import SGD
from tinycl.models.registry import create

EPOCH = 50_000


def time_epoch(batch: int, samples: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    model = create("tinycl-net")
    net = from_torch(model, model.input_shape)
    opt = SGD(lr=0.01)
    g = torch.Generator().manual_seed(0)
    steps = max(1, samples // batch)
    x = torch.randn(steps, batch, *model.input_shape, generator=g)
    y = torch.randint(0, 10, (steps, batch), generator=g)
    for i in range(min(5, steps)):                # warm-up
        net.train_step(x[i], y[i], opt)
    t = time.perf_counter()
    for i in range(steps):
        net.train_step(x[i], y[i], opt)
    dt = time.perf_counter() - t
    per_step = dt / steps
    return {"batch": batch, "threads": threads, "timed_samples": steps * batch, "timed_s": dt,
            "per_sample_us": per_step / batch * 1e6, "epoch_s_extrapolated": per_step * EPOCH / batch}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="*", default=[1, 64])
    ap.add_argument("--samples", type=int, default=5000, help="samples timed (a fraction of the epoch)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = [time_epoch(b, args.samples, args.threads) for b in args.batch]
    for r in rows:
        print(f"tinycl engine, tinycl-net, batch {r['batch']}, {r['threads']} thread(s): timed {r['timed_samples']} "
              f"samples in {r['timed_s']:.2f} s -> {r['per_sample_us']:.0f} us/sample, "
              f"{r['epoch_s_extrapolated']:.1f} s per 50 000-sample epoch (extrapolated)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
