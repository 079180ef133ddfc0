"""The engine of this checkout against the engine of an earlier commit, on the zoo: is it slower?

The issue's target: the graph engine is no slower than the previous (layer-tree) engine, commit
bb288b5. ``src/`` of that commit is extracted to a temporary folder; one worker process per
(engine, round) runs the same training steps (forward, cross-entropy, backward, SGD momentum 0.9;
frozen batch-norm statistics at batch 1; 16 random batches cycled) with torch autograd steps
interleaved in the same process as the load reference. The two engines' processes alternate,
``--rounds`` times. Reported per model and batch: the median milliseconds per tinycl step of each
engine, their ratio (this / previous: <= 1 means no slower), and each engine's ratio to torch.

tinycl sets glibc's malloc to keep freed memory (``tinycl.kernels.allocator``), which is process
wide: it speeds torch's steps in the same process too. By default (``--allocator same``) every
worker applies those settings first, so both engines and torch run on the same allocator and the
comparison is of the engine code; ``--allocator own`` runs each engine as it ships.

    .venv/bin/python bench/engine_vs_commit.py --threads 1                  # zoo, batch 1 and 32
    .venv/bin/python bench/engine_vs_commit.py --commit bb288b5 --rounds 9 --json F
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tinycl.kernels.allocator import SETTINGS

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["tinycl-net", "resnet8", "mobilenet-v1"]

# Only the API both engines have: from_torch, the zoo registry, the loss kernels, SGD.
WORKER = r"""
import ctypes, json, sys, time, torch
if sys.argv[5] != "own":  # this checkout's allocator settings (tinycl.kernels.allocator.SETTINGS) in both
    libc = ctypes.CDLL("libc.so.6")
    for param, value in json.loads(sys.argv[5]):
        assert libc.mallopt(param, value) == 1
from torch import nn
from tinycl import from_torch
from tinycl.kernels import loss as LOSS
from tinycl.kernels.optim import SGD
from tinycl.models.registry import create
name, batch, threads, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
kw = dict(width=0.25, input_shape=(3, 32, 32)) if name == "mobilenet-v1" else {}
model, ref = create(name, **kw), create(name, **kw)
ref.load_state_dict(model.state_dict())
shape = model.input_shape
net, opt = from_torch(model, shape), SGD(lr=0.01, momentum=0.9)
ref.train()
if batch == 1:
    for layer in net.layers():
        if layer.kind == "batchnorm2d":
            layer.frozen_stats = True
    ref.apply(lambda m: m.eval() if isinstance(m, nn.BatchNorm2d) else None)
topt = torch.optim.SGD(ref.parameters(), lr=0.01, momentum=0.9)
g = torch.Generator().manual_seed(0)
pool = [(torch.randn(batch, *shape, generator=g), torch.randint(0, model.num_classes, (batch,), generator=g))
        for _ in range(16)]
def tc(i):
    x, y = pool[i % 16]
    net.train()
    _, p = LOSS.cross_entropy_forward(net.forward(x), y)
    net.backward(LOSS.cross_entropy_backward(p, y), need_input=False)
    net.step(opt)
def th(i):
    x, y = pool[i % 16]
    topt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(ref(x), y).backward()
    topt.step()
def timed(fn, k, base):
    t = time.perf_counter()
    for i in range(k):
        fn(base + i)
    return (time.perf_counter() - t) / k
timed(tc, 10, 0), timed(th, 10, 0)
out = {"tinycl": [], "torch": []}
for r in range(5):
    out["tinycl"].append(timed(tc, steps, r * steps))
    out["torch"].append(timed(th, steps, r * steps))
print(json.dumps({k: sorted(v)[len(v) // 2] for k, v in out.items()}))  # median of 5
"""


def extract(commit: str, where: Path) -> Path:
    """``src/`` of ``commit`` (git archive) under ``where``."""
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "src"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=tar, check=True)
    return where / "src"


def one(src: Path, model: str, batch: int, threads: int, steps: int, allocator: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS=str(threads))
    if allocator == "own":
        env.pop("TINYCL_MALLOC", None)
    mode = json.dumps(SETTINGS) if allocator == "same" else "own"
    out = subprocess.run([sys.executable, "-c", WORKER, model, str(batch), str(threads), str(steps), mode],
                         env=env,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commit", default="bb288b5", help="the previous engine (default: the layer-tree engine)")
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5, help="alternating worker processes per engine")
    ap.add_argument("--allocator", choices=["same", "own"], default="same",
                    help="same: both engines (and torch) run with tinycl's glibc malloc settings, so the "
                         "comparison is of the engine code; own: each as it ships (the previous one with "
                         "glibc's defaults)")
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        old, new = extract(a.commit, Path(tmp)), ROOT / "src"
        print(f"| model | batch | previous ms | this ms | this / previous | previous / torch | this / torch |")
        print("|---|---|---|---|---|---|---|")
        for model in a.models:
            for batch in a.batches:
                steps = 40 if batch == 1 else 8
                got = {"previous": [], "this": []}
                for _ in range(a.rounds):
                    got["previous"].append(one(old, model, batch, a.threads, steps, a.allocator))
                    got["this"].append(one(new, model, batch, a.threads, steps, a.allocator))
                med = {k: {f: statistics.median(r[f] for r in v) for f in ("tinycl", "torch")}
                       for k, v in got.items()}
                row = {"model": model, "batch": batch, "threads": a.threads, "commit": a.commit,
                       "allocator": a.allocator,
                       "previous_s": med["previous"]["tinycl"], "this_s": med["this"]["tinycl"],
                       "this_over_previous": med["this"]["tinycl"] / med["previous"]["tinycl"],
                       "previous_over_torch": statistics.median(r["tinycl"] / r["torch"] for r in got["previous"]),
                       "this_over_torch": statistics.median(r["tinycl"] / r["torch"] for r in got["this"]),
                       "rounds": got}
                rows.append(row)
                print(f"| {model} | {batch} | {row['previous_s'] * 1e3:.3f} | {row['this_s'] * 1e3:.3f} | "
                      f"{row['this_over_previous']:.3f} | {row['previous_over_torch']:.3f} | "
                      f"{row['this_over_torch']:.3f} |", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"load": os.getloadavg(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
