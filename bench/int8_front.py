"""INT8 front throughput: tinycl's integer front against torch's FP32 eval forward of the same layers.

Both run the shipped ResNet-8 backbone up to ``--layer`` (default block2_1) on the same
normalised images (the shipped CIFAR-10 subset), with the same thread count and batch:
tinycl through ``quantize_front`` (float in, integer kernels, dequantized latent out),
torch as ``model[:cut].eval()`` under ``no_grad`` (the float front it replaces). Rounds
are interleaved so background load hits both alike; the median round is reported. The
reference integer path (``tinycl.kernels.int8.FAST = False``) is timed too, as the before.

    .venv/bin/python bench/int8_front.py                       # JSON: bench/results/int8_front.json
    .venv/bin/python bench/int8_front.py --threads 1 --batches 256 --rounds 3

ratio = tinycl INT8 time / torch FP32 time (target <= 1.0).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from tinycl.cl import backbone as B
from tinycl.data import load
from tinycl.kernels import int8 as K
from tinycl.models.int8_front import quantize_front
from tinycl.models.registry import split_points


def fronts(layer: str):
    """(float front in eval mode, INT8 front) of the shipped ResNet-8, and the normalised images."""
    bb = B.load_backbone(B.SHIPPED)
    model = B.build_model(bb)
    cut = split_points(model).index(layer) + 1
    front = model[:cut].eval()
    ds = load("shipped")
    x = B.to_input(ds.train.x, bb["mean"], bb["std"])
    return front, quantize_front(front, x[:256]), x


def timed(fn, x: torch.Tensor, batch: int) -> float:
    """Seconds to run ``fn`` over ``x`` in batches of ``batch``."""
    t = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(x), batch):
            fn(x[i:i + batch])
    return time.perf_counter() - t


def measure(front, qfront, x, batch: int, rounds: int, with_ref: bool) -> dict:
    """Median seconds per image of torch FP32, tinycl INT8 (and its reference path), interleaved."""
    runs = {"torch_fp32": [], "tinycl_int8": [], "tinycl_int8_ref": []}
    timed(front, x[:2 * batch], batch)  # warm-up (weights packed, tables built)
    timed(qfront, x[:2 * batch], batch)
    for _ in range(rounds):
        runs["torch_fp32"].append(timed(front, x, batch))
        runs["tinycl_int8"].append(timed(qfront, x, batch))
        if with_ref:
            K.FAST = False
            try:
                runs["tinycl_int8_ref"].append(timed(qfront, x, batch))
            finally:
                K.FAST = True
    out = {k: statistics.median(v) / len(x) for k, v in runs.items() if v}
    out["ratio"] = out["tinycl_int8"] / out["torch_fp32"]
    if with_ref:
        out["ratio_ref"] = out["tinycl_int8_ref"] / out["torch_fp32"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layer", default="block2_1")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    ap.add_argument("--images", type=int, default=2048, help="images per round at batch > 1 (batch 1: 1/8)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-ref", action="store_true", help="skip the reference integer path")
    ap.add_argument("--json", type=Path, default=Path("bench/results/int8_front.json"))
    args = ap.parse_args(argv)
    front, qfront, x = fronts(args.layer)
    with torch.no_grad():  # the two fronts compute the same function, up to quantization
        f, q = front(x[:64]), qfront(x[:64])
    cos = torch.nn.functional.cosine_similarity(f.flatten(), q.flatten(), dim=0).item()
    rows = []
    print("| threads | batch | images | torch fp32 ms/img | tinycl int8 ms/img | ratio | reference int8 ms/img | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batches:
            n = args.images if batch > 1 else max(8, args.images // 8)
            r = measure(front, qfront, x[:n], batch, args.rounds, not args.no_ref)
            rows.append(dict(threads=threads, batch=batch, images=n, **r))
            ref = (f"{1e3 * r['tinycl_int8_ref']:.3f} | {r['ratio_ref']:.2f}" if "ratio_ref" in r else "- | -")
            print(f"| {threads} | {batch} | {n} | {1e3 * r['torch_fp32']:.3f} | {1e3 * r['tinycl_int8']:.3f} | "
                  f"{r['ratio']:.2f} | {ref} |", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"layer": args.layer, "latent_cosine_int8_vs_fp32": cos,
                                     "rounds": args.rounds, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
