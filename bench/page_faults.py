"""Minor page faults per training step, tinycl and torch autograd, with glibc's malloc defaults and
with tinycl's settings (``tinycl.kernels.allocator``).

Page faults do not depend on machine load, so this shows the allocator's effect where timings are
noisy. One model of bench/engine.py, the two frameworks alternating step by step as in
bench/engine.py (frozen batch-norm statistics at batch 1 in both); each setting in its own
process (``TINYCL_MALLOC=default`` keeps glibc's defaults). Faults are counted with
``resource.getrusage`` around each step, after 3 warm-up steps.

    .venv/bin/python bench/page_faults.py resnet18 --batches 1 32 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

WORKER = r"""
import json, resource, sys, torch
sys.path.insert(0, sys.argv[5])
from engine import pair_for_batch
from tinycl.kernels import loss as LOSS
from tinycl.kernels.optim import SGD
name, batch, threads, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
net, ref = pair_for_batch(name, batch)
opt, topt = SGD(lr=0.01, momentum=0.9), torch.optim.SGD(ref.parameters(), lr=0.01, momentum=0.9)
g = torch.Generator().manual_seed(0)
pool = [(torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g)) for _ in range(16)]
def tc(x, y):
    net.train()
    _, p = LOSS.cross_entropy_forward(net.forward(x), y)
    net.backward(LOSS.cross_entropy_backward(p, y), need_input=False)
    net.step(opt)
def th(x, y):
    topt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(ref(x), y).backward()
    topt.step()
faults = {"tinycl": 0, "torch": 0}
for i in range(steps + 3):
    for name_, fn in (("tinycl", tc), ("torch", th)):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        fn(*pool[i % 16])
        if i >= 3:
            faults[name_] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({k: v / steps for k, v in faults.items()}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a model of bench/engine.py (zoo or --real names)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args()
    bench = str(Path(__file__).resolve().parent)
    rows = []
    print("| batch | glibc defaults: tinycl / torch faults per step | tinycl's settings: tinycl / torch |")
    print("|---|---|---|")
    for batch in a.batches:
        got = {}
        for mode in ("default", "tinycl"):
            env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
            env["TINYCL_MALLOC"] = mode
            out = subprocess.run([sys.executable, "-c", WORKER, a.model, str(batch), str(a.threads), str(a.steps),
                                  bench], env=env, check=True, capture_output=True, text=True).stdout
            got[mode] = json.loads(out.strip().splitlines()[-1])
        rows.append({"model": a.model, "batch": batch, "threads": a.threads, **got})
        d, t = got["default"], got["tinycl"]
        print(f"| {batch} | {d['tinycl']:,.0f} / {d['torch']:,.0f} | {t['tinycl']:,.0f} / {t['torch']:,.0f} |",
              flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
