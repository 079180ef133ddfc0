"""Measure the generated learner on the Cortex-M4F emulator: instructions per learning event,
flash and RAM, beside the memory planner and the STM32L4 cost model for the same event.

    .venv/bin/python bench/deploy_measure.py [--layers block3_1 block2_1] [--keep DIR] [--rows]
        [--write src/tinycl/hw/measured/cortex-m4f.json]   # the figures `tinycl validate` shows

Needs gcc, make, arm-none-eabi-gcc and qemu-system-arm. The learner is the one of the
tests: the shipped ResNet-8 backbone split after the latent layer, INT8 front calibrated
on 64 shipped CIFAR images, 8-bit reservoir replay memory of 24 latents (20 stored), SGD
(lr 0.01, momentum 0.9, weight decay 5e-4), events of 4, 1, 3, 4 new images + up to 4 replays.

Instructions: QEMU runs with ``-icount shift=0`` (virtual time advances 1 ns per executed
instruction); the program reads the board's 25 MHz CMSDK timer around each ``tinycl_learn``
and calibrates ticks against a loop of 2,000,000 instructions (so about 40 instructions per
tick; the figure is exact to +-40 instructions). Cycles are not modelled by QEMU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import torch

from tinycl.export.generate import generate, read_output, write_input
from tinycl.export.plan import build_plan
from tinycl.export.planner import arena_blocks, arena_bytes, state_bytes
from tinycl.export.reference import Reference


def resnet8_learner(latent_layer="block3_1", bits=8, capacity=24, fill=20, max_new=4, replay_batch=4, seed=0,
                    precision="fp32"):
    """(plan, qfront, events, test inputs, full model) of the tests' ResNet-8 learner."""
    from tinycl.cl import backbone as B
    from tinycl.cl.memory import ReplayMemory
    from tinycl.data.shipped import load_shipped
    from tinycl.kernels.optim import SGD
    from tinycl.graph import capture
    from tinycl.models.convert import from_graph
    from tinycl.models.int8_front import quantize_front
    from tinycl.numerics.latent_quant import LatentQuantizer
    from tinycl.numerics.rng import Pcg32
    bb, ds = B.load_backbone(B.SHIPPED), load_shipped()
    model = B.build_model(bb)
    front, back = capture(model, tuple(ds.train.x.shape[1:])).split(latent_layer)
    perm = torch.randperm(len(ds.train.x), generator=torch.Generator().manual_seed(seed))
    inp = lambda idx: B.to_input(ds.train.x[idx], bb["mean"], bb["std"])  # noqa: E731
    qf = quantize_front(front, inp(perm[:64]))
    lat = qf(inp(perm[64:64 + fill + 8]))
    mem = ReplayMemory(capacity, LatentQuantizer(bits).fit(lat), "reservoir", seed=seed)
    mem.add(lat[:fill], ds.train.y[perm[64:64 + fill]], 0)
    net = from_graph(back, precision=precision).train()
    opt = SGD(lr=0.01, momentum=0.9, weight_decay=5e-4)
    net.train_step(lat[fill:fill + 8], ds.train.y[perm[64 + fill:64 + fill + 8]], opt)
    plan = build_plan(qf, tuple(ds.train.x.shape[1:]), net, len(ds.classes), mem, opt, Pcg32(seed, 7),
                      max_new=max_new, replay_batch=replay_batch)
    events, at = [], 200
    for n in (max_new, 1, max_new - 1, max_new):
        events.append((inp(perm[at:at + n]), ds.train.y[perm[at:at + n]]))
        at += n
    return plan, qf, events, B.to_input(ds.test.x[:3], bb["mean"], bb["std"]), model


def _size(elf: Path) -> dict:
    out = subprocess.run(["arm-none-eabi-size", str(elf)], capture_output=True, text=True, check=True).stdout
    text, data, bss = (int(v) for v in out.splitlines()[1].split()[:3])
    return {"text": text, "data": data, "bss": bss, "flash": text + data, "ram": data + bss}


def measure(latent_layer: str, work: Path, precision: str = "fp32") -> dict:
    """Build and run one learner on QEMU; returns the figures (see module docstring)."""
    from tinycl.hw.cost import profile
    plan, qf, events, tests, model = resnet8_learner(latent_layer, precision=precision)
    proj = generate(plan, work / f"{latent_layer}-{precision}")
    write_input(proj / "in.bin", events, tests)
    for t in ("m4", "run-m4"):
        subprocess.run(["make", "-s", t], cwd=proj, check=True, capture_output=True, timeout=600)
    out = read_output(proj / "out.bin", plan, [x.shape[0] for x, _ in events], tests.shape[0])
    ref = Reference(plan, qf)
    exact = True
    for (x, y), ev in zip(events, out["events"]):
        ref.learn(x, y)
        exact &= bool(torch.equal(ev["rows"], ref.rows)) and all(
            torch.equal(ev["params"][k].view(torch.int32), v.reshape(-1).view(torch.int32))
            for k, v in ref.params.items())
    per_tick = 2_000_000 / out["calib_ticks"]
    evs = []
    size = 0 if plan.rows is None else int(plan.rows.shape[0])
    for (x, _), ev in zip(events, out["events"]):
        n, k = x.shape[0], min(plan.replay_batch, size)
        model_p = profile(model, (3, 32, 32), "stm32l4", precision, latent_layer, batch=n, n_replays=k, lr_bits=8,
                          step_batch=n + k, optimizer="sgd-momentum")
        front_macs = sum(sum(r["macs"].values()) for r in model_p["layers"] if r["frozen"]) * n
        evs.append({"new": n, "replays": k, "instructions": round(ev["ticks"] * per_tick),
                    "stm32l4_model_cycles": round(model_p["total"]["cycles"]), "front_macs": front_macs})
        size = min(plan.capacity, size + n)
    return {"latent_layer": latent_layer, "bit_exact_vs_reference": exact, "instructions_per_tick": per_tick,
            "events": evs, "size": _size(proj / "tinycl_m4.elf"), "arena_bytes": arena_bytes(plan),
            "arena_blocks": arena_blocks(plan), "state_bytes": state_bytes(plan),
            "stm32l4_model_groups_bytes": dict(model_p["memory"]["groups"]),
            "stm32l4_model_fits": model_p["total"]["fits"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", nargs="+", default=["block3_1", "block2_1"])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "fp16"], help="the back's training precision")
    ap.add_argument("--keep", default=None, help="folder for the generated projects (default: a temporary one)")
    ap.add_argument("--rows", action="store_true", help="print validation-table rows instead of JSON")
    ap.add_argument("--write", metavar="FILE.json", help="also write the results (with this command) to FILE")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = [measure(layer, work, args.precision) for layer in args.layers]
    if args.write:
        import sys
        doc = {"command": "python " + " ".join(sys.argv), "results": results}
        Path(args.write).write_text(json.dumps(doc, indent=1) + "\n")
    if args.rows:
        from tinycl.hw.measured import validation_rows
        from tinycl.hw.validate import format_table
        print(format_table(validation_rows(results)))
    else:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
