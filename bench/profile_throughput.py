"""Profiling throughput: every zoo model x every built-in target x every precision, as `tinycl profile` does.

One (model, target) cell = for each of the four precisions, a fresh `tinycl.hw.cost.profile` call
(model already built, as the CLI does after `create`): the workload trace, the target's mapping,
cycles, energy and the memory plan. A precision the target does not run is a one-line
`TinyclError` and counts in the time too; a model the target's mapping cannot run (e.g. a
depthwise conv on the TinyCL PU) is reported as such. Requirement (issue 15): < 1 s per model
and target. The peer, measured in the same run on the same threads, is one torch autograd
training step (forward, cross-entropy, backward) of the same model at batch 1: the table gives
profile time / peer time as well, so the figure can be compared across machines.

    .venv/bin/python bench/profile_throughput.py [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from tinycl.errors import TinyclError
from tinycl.hw.cost import profile
from tinycl.hw.target import list_targets
from tinycl.models.registry import create, list_models

PRECISIONS = ("fp32", "fp16", "bf16", "int8")


def peer_step_s(net: nn.Module, shape, repeats: int) -> float:
    """Median wall time (s) of one torch autograd training step at batch 1."""
    x = torch.randn(1, *shape)
    y = torch.zeros(1, dtype=torch.long)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        net.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def cell_s(net: nn.Module, target: str, repeats: int) -> tuple[float, str]:
    """Median wall time (s) of profiling ``net`` on ``target`` at every precision, and a status."""
    times, status = [], "ok"
    for _ in range(repeats):
        t0 = time.perf_counter()
        ran = 0
        for prec in PRECISIONS:
            try:
                profile(net, net.input_shape, target, prec)
                ran += 1
            except TinyclError as e:
                if "does not support precision" not in str(e):
                    status = "unsupported: " + str(e)[:70]
        times.append(time.perf_counter() - t0)
        status = status if status != "ok" else f"ok ({ran} precisions)"
    return statistics.median(times), status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="write the table as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    print(f"{'model':<14}{'target':<13}{'s / cell':>10}{'x peer step':>13}  status")
    for name in list_models():
        net = create(name)
        net.train()
        peer = peer_step_s(net, net.input_shape, args.repeats)
        for t in list_targets():
            s, status = cell_s(net, t, args.repeats)
            rows.append({"model": name, "target": t, "seconds": s, "peer_step_s": peer, "ratio": s / peer,
                         "status": status})
            print(f"{name:<14}{t:<13}{s:>10.3f}{s / peer:>13.1f}  {status}")
    worst = max(rows, key=lambda r: r["seconds"])
    print(f"max {worst['seconds']:.3f} s per model and target ({worst['model']} on {worst['target']}); "
          f"mean {statistics.mean(r['seconds'] for r in rows):.3f} s; "
          f"total {sum(r['seconds'] for r in rows):.1f} s for {len(rows)} cells")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
