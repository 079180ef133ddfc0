"""Training-step wall time: tinycl's explicit kernels against torch autograd, same run.

For each model, batch and precision: one step = forward, cross-entropy, backward, SGD
(momentum 0.9) update. tinycl and torch run on the same weights, batch and thread
count, in interleaved rounds (so background load hits both alike); the median round
is reported. At batch 1, BatchNorm uses frozen statistics in both (as on a device).

    .venv/bin/python bench/engine.py                 # full table (a few minutes)
    .venv/bin/python bench/engine.py --quick         # fewer rounds
    .venv/bin/python bench/engine.py --json out.json

GFLOP/s counts 2 x (forward + input-gradient + weight-gradient MACs) of conv and linear
layers per step; the peak is a measured FP32 1024^3 matmul on the same threads. Each
framework cycles through the same pool of 16 random batches.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from tinycl import from_torch
from tinycl.kernels.macs import conv2d_macs, linear_macs
from tinycl.kernels.optim import SGD
from tinycl.models.registry import create

MODELS = [("tinycl-net", {}), ("resnet8", {}), ("mobilenet-v1", dict(width=0.25, input_shape=(3, 32, 32)))]


def step_macs(model: nn.Module, input_shape, batch: int) -> int:
    """Forward + both backward MACs of all conv and linear layers for one step."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        x = inp[0]
        if isinstance(m, nn.Conv2d):
            c = conv2d_macs(x.shape[0], m.in_channels, m.out_channels, x.shape[2], x.shape[3], *m.kernel_size,
                            m.stride, m.padding, m.groups)
        else:
            c = linear_macs(x.shape[0], m.in_features, m.out_features)
        total += c["forward"] + c["backward_input"] + c["backward_weight"]

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(batch, *input_shape))
    for h in hs:
        h.remove()
    return total


def matmul_peak_gflops(n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / min(times) / 1e9


def timed(fn, k: int) -> float:
    t = time.perf_counter()
    for _ in range(k):
        fn()
    return (time.perf_counter() - t) / k


def run_case(name, kw, batch, precisions, rounds, k):
    model = create(name, **kw)
    ref = create(name, **kw)
    ref.load_state_dict(model.state_dict())
    shape = model.input_shape
    g = torch.Generator().manual_seed(0)
    # a pool of batches cycled through: repeating one batch drives the loss to zero and the
    # FP32 gradients into subnormals, which x86 handles ~20x slower (FP16 would flush them)
    pool = [(torch.randn(batch, *shape, generator=g), torch.randint(0, model.num_classes, (batch,), generator=g))
            for _ in range(16)]
    it_n: dict[str, int] = {}

    def nxt(counter, key):
        counter[key] = counter.get(key, -1) + 1
        return pool[counter[key] % len(pool)]
    ref.train()
    if batch == 1:
        ref.apply(lambda m: m.eval() if isinstance(m, nn.BatchNorm2d) else None)
    topt = torch.optim.SGD(ref.parameters(), lr=0.01, momentum=0.9)

    def torch_step():
        x, y = nxt(it_n, "torch")
        topt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(ref(x), y).backward()
        topt.step()

    nets = {}
    for p in precisions:
        net = from_torch(model, shape, precision=p)
        if batch == 1:
            for layer in net.layers():
                if layer.kind == "batchnorm2d":
                    layer.frozen_stats = True
        opt = SGD(lr=0.01, momentum=0.9)
        nets[p] = (lambda net=net, opt=opt, p=p: net.train_step(*nxt(it_n, p), opt))
    for fn in [torch_step, *nets.values()]:
        timed(fn, 3)
    samples = {p: [] for p in ["torch", *precisions]}
    for _ in range(rounds):
        samples["torch"].append(timed(torch_step, k))
        for p, fn in nets.items():
            samples[p].append(timed(fn, k))
    med = {p: statistics.median(v) for p, v in samples.items()}
    macs = step_macs(create(name, **kw), shape, batch)
    return med, macs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rounds, k = (3, 3) if args.quick else (7, 5)
    peak = matmul_peak_gflops()
    print(f"threads {args.threads}; measured FP32 matmul peak {peak:.1f} GFLOP/s (1024^3 sgemm)\n")
    hdr = ("| model | batch | torch ms | fp32 ms | fp32/torch | fp16 ms | fp16/fp32 | bf16 ms | bf16/fp32 "
           "| fp32 GFLOP/s | of peak |")
    print(hdr)
    print("|---" * (hdr.count("|") - 1) + "|")
    rows = []
    for name, kw in MODELS:
        for batch in (1, 32):
            med, macs = run_case(name, kw, batch, ["fp32", "fp16", "bf16"], rounds, k if batch == 32 else 4 * k)
            gf = 2 * macs / med["fp32"] / 1e9
            row = dict(model=name, batch=batch, threads=args.threads, step_macs=macs,
                       torch_s=med["torch"], fp32_s=med["fp32"], fp16_s=med["fp16"], bf16_s=med["bf16"],
                       fp32_over_torch=med["fp32"] / med["torch"], fp16_over_fp32=med["fp16"] / med["fp32"],
                       bf16_over_fp32=med["bf16"] / med["fp32"], fp32_gflops=gf, peak_gflops=peak)
            rows.append(row)
            print(f"| {name} | {batch} | {med['torch']*1e3:.2f} | {med['fp32']*1e3:.2f} | {row['fp32_over_torch']:.2f} "
                  f"| {med['fp16']*1e3:.2f} | {row['fp16_over_fp32']:.2f} | {med['bf16']*1e3:.2f} "
                  f"| {row['bf16_over_fp32']:.2f} | {gf:.1f} | {gf/peak:.0%} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"peak_gflops": peak, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
