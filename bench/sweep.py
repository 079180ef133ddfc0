"""Sweep speed-up from shared work, and Ray's overhead per trial.

The issue's benchmark: 24 configurations on full CIFAR-10, 3 latent layers x 4 bit widths x
2 memory sizes, as one ``tinycl sweep`` (the INT8 latents of each latent layer built once and
shared through Ray's object store) against the same 24 configurations as 24 sequential
``tinycl run`` invocations. Both start from what a user has before any run: the decoded images in
tinycl's cache, and no latents (each gets its own fresh ``TINYCL_CACHE`` folder with hard links
to the decoded images only). Peers (``--peers``):

- ``none``: each run has its own fresh cache folder, so each builds its own latents (one by one,
  nothing shared): the issue's peer;
- ``disk-cache``: the runs share one fresh cache folder, so the first run of each latent layer
  builds its latents and the later runs read them from disk (tinycl's own sharing between runs).

    .venv/bin/python bench/sweep.py --data imagefolder:PATH --epochs 2 ...     # the full benchmark
    .venv/bin/python bench/sweep.py --data shipped --quick                     # 4 configs, minutes

Ray's overhead per trial (shipped data): :func:`ray_overhead`, the same trials called directly
and as Ray tasks, as a share of the Ray task's time.

Output: JSON on stdout (and ``--json-out FILE``): sweep_s, sequential_s per peer, speedup per
peer, the seconds of every sequential run, ray_overhead, and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tinycl.cl.config import apply_sets
from tinycl.data.cache import cache_root

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


def fresh_cache(root: Path, dst: Path) -> Path:
    """A cache folder as a user has it before any run: hard links to the decoded images of ``root``
    (every cache kind but ``latents``, and the shipped array), no latents."""
    dst.mkdir(parents=True, exist_ok=True)
    for entry in root.iterdir() if root.is_dir() else []:
        if entry.is_file() and entry.suffix == ".npy":
            os.link(entry, dst / entry.name)
        elif entry.is_dir() and entry.name != "latents" and any(entry.glob("*.npz")):
            (dst / entry.name).mkdir(exist_ok=True)
            for f in entry.glob("*.npz"):
                os.link(f, dst / entry.name / f.name)
    return dst


def latent_entries(cache: Path) -> int:
    return len(list((cache / "latents").glob("*.npz")))


def run_sweep(sp: dict, work: Path, cpus: int, root: Path) -> tuple[float, dict, int]:
    """The sweep from a cold latent cache: seconds, trials.json, latent entries it built."""
    f = work / "sweep.yaml"
    f.write_text(yaml.safe_dump(sp))
    cache = fresh_cache(root, work / "cache-sweep")
    t = time.perf_counter()
    subprocess.run(tinycl() + ["sweep", "--config", str(f), "--out", str(work / "sweep"), "--num-cpus",
                               str(cpus), "--quiet"], check=True, stdout=subprocess.DEVNULL,
                   env=dict(os.environ, TINYCL_CACHE=str(cache)))
    dt = time.perf_counter() - t
    built = latent_entries(cache)
    shutil.rmtree(cache)
    return dt, json.loads((work / "sweep" / "trials.json").read_text()), built


def run_sequential(trials: list[dict], work: Path, root: Path, peer: str) -> dict:
    """The same configs as sequential ``tinycl run`` invocations (each a fresh process and setup),
    from a cold latent cache: one per run (``none``) or one shared by all runs (``disk-cache``)."""
    shared = fresh_cache(root, work / f"cache-{peer}") if peer == "disk-cache" else None
    seconds, built = [], 0
    t = time.perf_counter()
    for i, tr in enumerate(trials):
        f = work / f"{peer}-run{i}.yaml"
        f.write_text(yaml.safe_dump(tr["config"]))
        cache = shared or fresh_cache(root, work / f"cache-{peer}-{i}")
        t_run = time.perf_counter()
        subprocess.run(tinycl() + ["run", "--config", str(f), "--out", str(work / f"{peer}-run{i}"), "--quiet"],
                       check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, TINYCL_CACHE=str(cache)))
        seconds.append(time.perf_counter() - t_run)
        if shared is None:
            built += latent_entries(cache)
            shutil.rmtree(cache)
    total = time.perf_counter() - t
    if shared is not None:
        built = latent_entries(shared)
        shutil.rmtree(shared)
    return {"seconds": total, "run_seconds": seconds, "latent_entries_built": built}


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


README_AXES = {"latent_layer": ["block3_1", "block2_1"], "lr_bits": [2, 8], "n_replays": [100, 300]}


def ray_overhead(work: Path) -> dict:
    """Ray's overhead per trial on the shipped data, on the trials of the README's sweep example
    (epochs 2, INT8 front; 2 latent layers x 2 bit widths x 2 memory sizes): each trial run by
    calling the trial function directly and as a Ray task with its setup in the object store, as a
    sweep passes it (scheduling, the setup fetched once per worker, returning the results).
    Alternated, 1 CPU; the worker's first trial (start-up, first fetch) is not counted.

    ``overhead_share`` = (Ray - direct) / Ray, summed over the trials; ``outside_task_share`` is the
    part spent outside the task's own function (scheduling, arguments and results)."""
    import itertools

    import ray

    from tinycl.cl.config import validate
    from tinycl.sweep.trial import SETUP_KEYS, build_setup, key_of, run_trial

    cfgs = [validate({"epochs": 2, "latent_layer": layer, "lr_bits": bits, "n_replays": slots})
            for layer, bits, slots in itertools.product(*README_AXES.values())]
    setups = {key_of(c, SETUP_KEYS): build_setup(c, str(work / "cache")) for c in cfgs}
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(run_trial)
        refs = {k: ray.put(s) for k, s in setups.items()}
        first = key_of(cfgs[0], SETUP_KEYS)  # the worker's start-up and first fetch: not counted
        ray.get(remote.remote(cfgs[0], str(work / "warm"), [refs[first]], first))
        direct, on_ray, inside = [], [], []
        for i, c in enumerate(cfgs):
            k = key_of(c, SETUP_KEYS)
            t = time.perf_counter()
            run_trial(c, str(work / f"direct{i}"), setups[k])
            direct.append(time.perf_counter() - t)
            t = time.perf_counter()
            got = ray.get(remote.remote(c, str(work / f"ray{i}"), [refs[k]], k))
            on_ray.append(time.perf_counter() - t)
            inside.append(got["seconds"])
    finally:
        ray.shutdown()
    d, r, n = sum(direct), sum(on_ray), len(cfgs)
    return {"trials": n, "trial_direct_s": d / n, "trial_on_ray_s": r / n, "overhead_share": (r - d) / r,
            "outside_task_s": (r - sum(inside)) / n, "outside_task_share": (r - sum(inside)) / r,
            "direct_s": direct, "on_ray_s": on_ray}


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
    ap.add_argument("--peers", nargs="*", default=["none", "disk-cache"], choices=["none", "disk-cache"],
                    help="sequential peers to measure (none: nothing shared; disk-cache: tinycl's cache)")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--work", help="folder for the runs (default: a temporary one)")
    ap.add_argument("--overhead-only", action="store_true", help="only Ray's overhead per trial (shipped data)")
    ap.add_argument("--json-out")
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="tinycl-bench-sweep-"))
    work.mkdir(parents=True, exist_ok=True)
    sp = spec(a.data, a.quick, a.epochs, a.layers, a.replays, a.backbone, a.set)
    out = {"data": a.data, "cpus": a.cpus, "epochs": a.epochs}
    root = cache_root()
    if root is None:
        sys.exit("bench/sweep.py: needs tinycl's cache folder for the decoded images (TINYCL_CACHE is off)")
    out["load_before"] = os.getloadavg()
    if not a.overhead_only:
        sweep_s, res, built = run_sweep(sp, work, a.cpus, root)
        trials = res["trials"]
        out["recommended"] = recommendations(trials, a.budgets)
        out.update(trials=len(trials), sweep_s=sweep_s, sweep_latent_entries_built=built,
                   failed=[t["id"] for t in trials if t["status"] != "ok"], sequential={}, speedup={})
        for peer in a.peers:
            seq = run_sequential(trials, work, root, peer)
            out["sequential"][peer] = seq
            out["speedup"][peer] = seq["seconds"] / sweep_s
            out[f"load_after_{peer}"] = os.getloadavg()
    out["ray_overhead"] = ray_overhead(work)
    out["load_after"] = os.getloadavg()
    text = json.dumps(out, indent=2)
    print(text)
    if a.json_out:
        Path(a.json_out).write_text(text)


if __name__ == "__main__":
    main()
