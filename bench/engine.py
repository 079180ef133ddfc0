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
import sys
import time
import types
from pathlib import Path

import torch
from torch import nn

from tinycl import from_torch
from tinycl.graph import capture
from tinycl.graph.counts import total_macs
from tinycl.kernels.optim import SGD
from tinycl.models.registry import create, list_models

MODELS = [("tinycl-net", {}), ("resnet8", {}), ("mobilenet-v1", dict(width=0.25, input_shape=(3, 32, 32)))]
# real library models (--real): torchvision, timm and a user-written residual net, on 32x32 inputs
REAL = [("mobilenet_v2", {}), ("mobilenet_v3_small", {}), ("resnet18", {}), ("shufflenet_v2_x0_5", {}),
        ("timm:lcnet_050", {}), ("user-resnet", {})]


def step_macs(model: nn.Module, input_shape, batch: int) -> int:
    """Forward + both backward MACs of all conv and linear layers for one step, as the learner computes
    them (from the captured graph: no input gradient of the first layer)."""
    c = total_macs(capture(model, input_shape), batch)
    return c["forward"] + c["backward_input"] + c["backward_weight"]


def real_model(name: str) -> nn.Module:
    """A library model (torchvision / timm) or the tests' user-written residual network, 10 classes."""
    if name == "user-resnet":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from user_model import make
        return make(10, (3, 32, 32))
    if name.startswith("timm:"):
        sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
        import timm
        return timm.create_model(name[5:], num_classes=10)
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import torchvision.models as tvm
    return getattr(tvm, name)(num_classes=10)


def build(name, kw):
    if name in list_models():
        return create(name, **kw)
    m = real_model(name)
    m.input_shape, m.num_classes = (3, 32, 32), 10
    return m


def pair_for_batch(name: str, batch: int):
    """(tinycl Network, torch module in training mode) of one model on the same weights; at batch 1
    batch norm uses frozen statistics in both (as on a device)."""
    model = build(name, {})
    ref = build(name, {})
    ref.load_state_dict(model.state_dict())
    net, ref = from_torch(model, (3, 32, 32)), ref.train()
    if batch == 1:
        for layer in net.layers():
            if layer.kind == "batchnorm2d":
                layer.frozen_stats = True
        ref.apply(lambda m: m.eval() if isinstance(m, nn.BatchNorm2d) else None)
    return net, ref


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
    model = build(name, kw)
    ref = build(name, kw)
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
    macs = step_macs(build(name, kw), shape, batch)
    return med, macs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--real", action="store_true", help="real library models (fp32 only) instead of the zoo")
    ap.add_argument("--batches", default="1,32", help="comma-separated batch sizes (default 1,32)")
    ap.add_argument("--models", nargs="+", help="only these models (names as in the table)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 7, --quick 3)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rounds, k = (3, 3) if args.quick else (7, 5)
    rounds = args.rounds or rounds
    peak = matmul_peak_gflops()
    print(f"threads {args.threads}; measured FP32 matmul peak {peak:.1f} GFLOP/s (1024^3 sgemm)\n")
    hdr = ("| model | batch | torch ms | fp32 ms | fp32/torch | fp16 ms | fp16/fp32 | bf16 ms | bf16/fp32 "
           "| fp32 GFLOP/s | of peak |")
    print(hdr)
    print("|---" * (hdr.count("|") - 1) + "|")
    rows = []
    precisions = ["fp32"] if args.real else ["fp32", "fp16", "bf16"]
    for name, kw in (REAL if args.real else MODELS):
        if args.models and name not in args.models:
            continue
        for batch in (int(b) for b in args.batches.split(",")):
            med, macs = run_case(name, kw, batch, precisions, rounds, k if batch == 32 else 4 * k)
            med.setdefault("fp16", float("nan"))
            med.setdefault("bf16", float("nan"))
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
