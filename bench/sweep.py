"""Sweep speed-up from shared work, and Ray's overhead per trial.

The issue's benchmark: 24 configurations on full CIFAR-10, 3 latent layers x 4 bit widths x
2 memory sizes, as one ``tinycl sweep`` (backbone and INT8 latents built once per latent layer
and shared through Ray's object store) against the same 24 configurations as 24 sequential
``tinycl run`` invocations (each a fresh process building its own setup; latents come from
tinycl's disk cache, ``TINYCL_CACHE``, when the sweep or an earlier run computed them). Both are
measured in the same run, on the same machine; the ratio is what is reported.

    .venv/bin/python bench/sweep.py --data cifar10:PATH/cifar-10-batches-py      # the full benchmark
    .venv/bin/python bench/sweep.py --data shipped --quick                         # 4 configs, minutes

Ray's overhead per trial (shipped data): :func:`ray_overhead`, the same trials called directly
and as Ray tasks, as a share of the Ray task's time.

Output: JSON on stdout (and ``--json-out FILE``): sweep_s, sequential_s, speedup, ray_overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tinycl.cl.config import apply_sets

LAYERS = ["block1_1", "block2_1", "block3_1"]
BITS = [2, 4, 6, 8]
REPLAYS = [750, 1500]


def spec(data: str, quick: bool, epochs: int, layers=LAYERS, replays=REPLAYS, backbone: str | None = None,
         sets=()) -> dict:
    axes = {"latent_layer": list(layers), "lr_bits": BITS, "n_replays": list(replays)}
    if quick:
        axes = {"latent_layer": ["block3_1"], "lr_bits": [2, 8], "n_replays": [100, 300]}
    base = {"data": data, "epochs": epochs}
    if backbone:
        base["backbone"] = backbone
    base = apply_sets(base, list(sets))  # --set KEY=VALUE, as tinycl run takes them
    return {"base": base, "axes": axes, "constraints": {"target": "vega"}, "targets": ["vega"]}


def tinycl() -> list[str]:
    return [sys.executable, "-m", "tinycl.cli"]


def run_sweep(sp: dict, work: Path, cpus: int) -> tuple[float, dict]:
    f = work / "sweep.yaml"
    f.write_text(yaml.safe_dump(sp))
    t = time.perf_counter()
    subprocess.run(tinycl() + ["sweep", "--config", str(f), "--out", str(work / "sweep"), "--num-cpus",
                               str(cpus), "--quiet"], check=True, stdout=subprocess.DEVNULL)
    dt = time.perf_counter() - t
    return dt, json.loads((work / "sweep" / "trials.json").read_text())


def run_sequential(trials: list[dict], work: Path) -> float:
    """The same configs as sequential ``tinycl run`` invocations (each a fresh process and setup)."""
    t = time.perf_counter()
    for i, tr in enumerate(trials):
        f = work / f"run{i}.yaml"
        f.write_text(yaml.safe_dump(tr["config"]))
        subprocess.run(tinycl() + ["run", "--config", str(f), "--out", str(work / f"run{i}"), "--quiet"],
                       check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def recommendations(trials: list[dict], budgets: list[int]) -> list[dict]:
    """The recommended trial (best accuracy on the front of accuracy, replay bytes and VEGA energy)
    among the finished trials whose replay memory fits each budget (bytes)."""
    from tinycl.sweep.pareto import recommend

    goals = [("average_accuracy", "max"), ("replay_bytes", "min"), ("energy_j", "min")]
    out = []
    for b in budgets:
        rec = recommend([t for t in trials if (t.get("replay_bytes") or 0) <= b], goals)
        out.append({"budget_bytes": b, "trial": rec and {k: rec.get(k) for k in
                    ("id", "config", "average_accuracy", "forgetting", "replay_bytes", "device_bytes",
                     "energy_j", "latency_s")}})
    return out


def ray_overhead(work: Path, n: int = 3) -> dict:
    """Ray's overhead per trial on the shipped data: the same trials (same prebuilt setup) run by
    calling the trial function directly, and as Ray tasks with the setup in the object store, as a
    sweep passes it (scheduling, the setup fetched once per worker, returning the results).
    Alternated, 1 CPU; the worker's first trial (start-up, first fetch) is not counted."""
    import ray

    from tinycl.cl.config import validate
    from tinycl.sweep.trial import SETUP_KEYS, build_setup, key_of, run_trial

    cfgs = [validate({"epochs": 1, "lr_bits": b, "n_replays": 200, "front_int8": False,
                      "latent_layer": "block3_1", "classes_per_experience": 3}) for b in (2, 4, 8)][:n]
    setup = build_setup(cfgs[0], str(work / "cache"))
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(run_trial)
        ref = ray.put(setup)
        # as in a sweep: the worker fetches the setup from the object store for its first trial
        ray.get(remote.remote(cfgs[0], str(work / "warm"), [ref], key_of(cfgs[0], SETUP_KEYS)))
        direct, on_ray = [], []
        for i, c in enumerate(cfgs):
            t = time.perf_counter()
            run_trial(c, str(work / f"direct{i}"), setup)
            direct.append(time.perf_counter() - t)
            t = time.perf_counter()
            ray.get(remote.remote(c, str(work / f"ray{i}"), [ref], key_of(c, SETUP_KEYS)))
            on_ray.append(time.perf_counter() - t)
    finally:
        ray.shutdown()
    d, r = sum(direct) / len(direct), sum(on_ray) / len(on_ray)
    return {"trial_direct_s": d, "trial_on_ray_s": r, "overhead_share": (r - d) / r}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="cifar10:PATH for the issue's benchmark, or shipped")
    ap.add_argument("--quick", action="store_true", help="4 configurations at one latent layer")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--layers", nargs="+", default=LAYERS, help="latent layers (3 in the issue's benchmark)")
    ap.add_argument("--replays", type=int, nargs="+", default=REPLAYS, help="replay memory sizes (slots)")
    ap.add_argument("--backbone", help="a backbone file for every trial (default: the run's own default)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a base config key")
    ap.add_argument("--budgets", type=int, nargs="+", default=[1_000_000, 256_000],
                    help="replay-memory budgets (bytes) to recommend a configuration for")
    ap.add_argument("--skip-sequential", action="store_true", help="the sweep only (its results, no peer)")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--work", help="folder for the runs (default: a temporary one)")
    ap.add_argument("--overhead-only", action="store_true", help="only Ray's overhead per trial (shipped data)")
    ap.add_argument("--json-out")
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="tinycl-bench-sweep-"))
    work.mkdir(parents=True, exist_ok=True)
    sp = spec(a.data, a.quick, a.epochs, a.layers, a.replays, a.backbone, a.set)
    out = {"data": a.data, "cpus": a.cpus, "epochs": a.epochs}
    if not a.overhead_only:
        sweep_s, res = run_sweep(sp, work, a.cpus)
        trials = res["trials"]
        out["recommended"] = recommendations(trials, a.budgets)
        out.update(trials=len(trials), sweep_s=sweep_s, failed=[t["id"] for t in trials if t["status"] != "ok"])
        if not a.skip_sequential:
            seq_s = run_sequential(trials, work)
            out.update(sequential_s=seq_s, speedup=seq_s / sweep_s)
    out["ray_overhead"] = ray_overhead(work)
    text = json.dumps(out, indent=2)
    print(text)
    if a.json_out:
        Path(a.json_out).write_text(text)


if __name__ == "__main__":
    main()
