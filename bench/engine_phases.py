"""Where a training step's time goes: forward, backward and SGD update, tinycl against torch autograd.

One model of bench/engine.py (zoo or ``--real``), batch 1 by default, frozen batch-norm statistics
at batch 1 in both (as bench/engine.py), the two frameworks alternating step by step; median
milliseconds per phase over the steps after the first 10.

    .venv/bin/python bench/engine_phases.py resnet18 --threads 2
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import pair_for_batch

from tinycl.kernels import loss as LOSS
from tinycl.kernels.optim import SGD


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=60)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    net, ref = pair_for_batch(a.model, a.batch)
    opt, topt = SGD(lr=0.01, momentum=0.9), torch.optim.SGD(ref.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    pool = [(torch.randn(a.batch, 3, 32, 32, generator=g), torch.randint(0, 10, (a.batch,), generator=g))
            for _ in range(16)]
    times: dict[str, list[float]] = {k: [] for k in ("tinycl forward", "tinycl backward", "tinycl step",
                                                      "torch forward", "torch backward", "torch step")}
    for it in range(a.steps):
        x, y = pool[it % 16]
        t = [time.perf_counter()]
        net.train()
        _, probs = LOSS.cross_entropy_forward(net.forward(x), y)
        t.append(time.perf_counter())
        net.backward(LOSS.cross_entropy_backward(probs, y), need_input=False)
        t.append(time.perf_counter())
        net.step(opt)
        t.append(time.perf_counter())
        topt.zero_grad(set_to_none=True)
        t.append(time.perf_counter())
        loss = torch.nn.functional.cross_entropy(ref(x), y)
        t.append(time.perf_counter())
        loss.backward()
        t.append(time.perf_counter())
        topt.step()
        t.append(time.perf_counter())
        if it >= 10:
            for k, d in zip(times, (t[1] - t[0], t[2] - t[1], t[3] - t[2], t[5] - t[4], t[6] - t[5], t[7] - t[6])):
                times[k].append(1e3 * d)
    for k, v in times.items():
        print(f"{k:16s} {statistics.median(v):7.2f} ms")


if __name__ == "__main__":
    main()
