"""Quantized latent replay on class-incremental CIFAR-10 (the shared JPEG set), one table.

Protocol (also in docs/results.md):
- data: the 50,000 + 10,000 CIFAR-10 JPEGs from ../shared/data/cifar10-images.tar.gz,
  extracted once to ~/.cache/tinycl/cifar10-images;
- backbone: ResNet-8 trained by tinycl's own engine on 4 classes (class order of seed 0),
  one backbone per seed (its pretraining seed is the run's seed; --fixed-backbone uses the
  seed-0 backbone for every seed, as the tables before issue 13 did), cached in
  ~/.cache/tinycl/bench/. Pretraining runs with --pretrain-threads threads (default 1),
  whatever the run's thread count: its float sums (oneDNN convolution gradients, batch-norm
  statistics) depend on the thread count, so backbones trained with 1 and 2 threads differ
  (all 41 tensors after 20 steps, up to 4.5e-4; then they drift apart), while a fixed thread
  count on the same CPU gives the same weights bit for bit. The count is recorded in the
  backbone file ("pretrain_threads") and in its cache name;
- stream: those 4 classes, then 3 experiences of 2 classes; the front (up to the latent
  layer) is frozen and run in INT8; the back is trained with SGD in FP32;
- strategies: naive, joint, raw replay (uint8 images at the bytes of the 8-bit latent
  memory), latent replay with FP32 latents, quantized latent replay at 8/7/6/4/3/2 bits with the
  same number of latents, and at 4/3/2 bits with as many latents as fit in the 8-bit memory's
  bytes (eq4, eq3, eq2: the equal-byte comparison with raw replay), each at two memory sizes and two
  latent layers; mean and spread over seeds. A seed
  changes the backbone, training order, replay sampling and memory choices; class order and
  the front's calibration images are fixed (seed 0), so runs of one seed share one set of
  latents per layer.

    .venv/bin/python bench/qlr_cifar10.py                    # the full table
    .venv/bin/python bench/qlr_cifar10.py --quick            # 1 seed, one memory size
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

from tinycl.cl.backbone import pretrain, save_backbone
from tinycl.cl.config import validate
from tinycl.cl.footprint import ENTRY_IDS
from tinycl.cl.runner import run
from tinycl.cl.scenarios import class_incremental
from tinycl.cl.setup import build
from tinycl.cl.strategies import names as strategy_names
from tinycl.cli import event_cost  # the cost tinycl run reports
from tinycl.data import load
from tinycl.numerics.packing import row_nbytes

CACHE = Path.home() / ".cache" / "tinycl"
TARBALL = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-images.tar.gz"


def extract(tarball: Path) -> Path:
    dest = CACHE / "cifar10-images"
    if (dest / ".complete").exists():
        return dest
    if not tarball.exists():
        sys.exit(f"bench: CIFAR-10 tarball not found: {tarball}")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as t:
        t.extractall(dest, filter="data")
    root = next(p.parent for p in dest.rglob("train") if p.is_dir())
    (dest / ".complete").write_text(str(root))
    return dest


def data_root(dest: Path) -> Path:
    return Path((dest / ".complete").read_text())


def backbone(spec: str, epochs: int, initial: int, seed: int = 0, threads: int = 1) -> Path:
    """The cached backbone of ``seed``, pretrained with ``threads`` threads (see the docstring)."""
    name = f"resnet8-cifar10-{initial}cls-{epochs}ep-seed{seed}-{threads}thr.ckpt"
    if seed == 0 and threads == 0:  # the backbone of the earlier tables (the caller's threads)
        name = f"resnet8-cifar10-{initial}cls-{epochs}ep.ckpt"
    path = CACHE / "bench" / name
    if path.exists():
        return path
    ds = load(spec)
    first = class_incremental(ds, initial, 1, seed=0)[0]
    t = time.perf_counter()
    caller = torch.get_num_threads()
    torch.set_num_threads(threads or caller)
    try:
        b = pretrain("resnet8", ds.train.x[first.train_idx], ds.train.y[first.train_idx], ds.num_classes,
                     first.classes, epochs, seed=seed)
    finally:
        torch.set_num_threads(caller)
    b["pretrain_threads"] = threads or caller
    b["torch_version"] = str(torch.__version__)  # a plain str (TorchVersion would not load safely)
    save_backbone(path, b)
    print(f"backbone: seed {seed}, {epochs} epochs on classes {first.classes}, {threads or caller} threads, "
          f"in {time.perf_counter() - t:.0f} s -> {path}")
    return path


STRATEGIES = set(strategy_names())
# the footprint entries every back-training method has; what a method keeps beyond them is its memory
BASE_KEYS = ("front_weights", "back_weights", "back_master_weights", "back_gradients", "optimizer_state",
             "latent_batch")


def equal_bytes_capacity(size: int, latent_shape, bits: int) -> int:
    """Slots of ``bits``-bit latents that fit in the bytes of ``size`` 8-bit latents (ids included)."""
    d = math.prod(latent_shape)
    return (size * (row_nbytes(d, 8) + ENTRY_IDS)) // (row_nbytes(d, bits) + ENTRY_IDS)


def one_run(cfg0: dict, setup, seed: int, size: int, strat: str) -> dict:
    """Accuracy %, forgetting %, seconds, replay bytes, capacity, device footprint bytes and the
    modelled learning event on VEGA of one strategy on one seed."""
    qnew = strat.endswith("q") and strat not in STRATEGIES  # e.g. eq2q: eq2 with lr_quantize_new
    cfg = dict(cfg0, seed=seed, n_replays=size, lr_quantize_new=qnew)
    strat_ = strat[:-1] if qnew else strat
    if strat_ in STRATEGIES:  # any registered method; replay methods keep 8-bit latents
        cfg.update(strategy=strat_, lr_bits=8)
    elif strat_ == "raw":
        cfg.update(strategy="raw_replay", lr_bits=8)
    elif strat_.startswith("eq"):  # N-bit latents filling the 8-bit memory's bytes
        bits = int(strat_[2:])
        cfg.update(strategy="latent_replay", lr_bits=bits,
                   n_replays=equal_bytes_capacity(size, setup.latent_shape, bits))
    else:
        cfg.update(strategy="latent_replay", lr_bits="fp32" if strat_ == "lr32" else int(strat_))
    t = time.perf_counter()
    res = run(cfg, Path(tempfile.mkdtemp()) / "r", progress=False, setup=setup, annotate=event_cost)
    fp = res["footprint_bytes"]
    event = res.get("learning_event") or {}
    return {"acc": 100 * res["average_accuracy"], "forgetting": 100 * res["forgetting"],
                "seconds": time.perf_counter() - t, "replay_bytes": fp.get("replay_memory", 0),
                "capacity": res["replay_capacity"], "footprint": fp["total"],
                "memory_bytes": fp["total"] - sum(fp.get(k, 0) for k in BASE_KEYS),
                "energy_j": event.get("energy_j"), "latency_s": event.get("latency_s"),
                "diverged": bool(res.get("diverged"))}


def mean_std(vals: list[float]) -> tuple[float, float]:
    return statistics.mean(vals), (statistics.pstdev(vals) if len(vals) > 1 else 0.0)


def summarize(layer: str, size: int, strat: str, runs: list[dict], args) -> dict:
    """One table row: mean and population spread over seeds, and the per-seed values."""
    accs = [r["acc"] for r in runs]
    acc_mean, acc_std = mean_std(accs)
    fgt_mean, fgt_std = mean_std([r["forgetting"] for r in runs])
    last = runs[-1]
    row = {"layer": layer, "size": size, "strategy": strat, "capacity": last["capacity"],
               "replay_bytes": last["replay_bytes"], "memory_bytes": last["memory_bytes"],
               "footprint_bytes": last["footprint"], "energy_j": last["energy_j"], "latency_s": last["latency_s"],
               "acc_mean": acc_mean, "acc_std": acc_std, "accs": accs, "forgetting_mean": fgt_mean,
               "forgetting_std": fgt_std, "forgettings": [r["forgetting"] for r in runs], "diverged": any(r["diverged"] for r in runs),
               "seconds": statistics.mean(r["seconds"] for r in runs), "seeds": args.seeds,
               "backbone_seeds": [0 if args.fixed_backbone else s for s in args.seeds]}
    energy = f"{1e3 * row['energy_j']:.1f} mJ" if row["energy_j"] is not None else "-"
    print(f"| {layer} | {size} | {strat} | {row['capacity']} | {row['memory_bytes']:,} | "
          f"{acc_mean:.2f} ± {acc_std:.2f} | {fgt_mean:.1f} ± {fgt_std:.1f} | {energy} | "
          f"{row['seconds']:.0f} s |", flush=True)
    return row


def combine(files: list[Path], out: Path) -> int:
    """One table from the JSON files of single-seed runs: rows of the same (layer, size, strategy)
    are merged over seeds (each seed once)."""
    runs: dict = {}
    for f in files:
        for row in json.loads(f.read_text())["rows"]:
            per = runs.setdefault((row["layer"], row["size"], row["strategy"]), {})
            # rows of one seed written before per-seed forgetting was recorded hold it as the mean
            fgts = row.get("forgettings") or ([row["forgetting_mean"]] if len(row["seeds"]) == 1 else None)
            if fgts is None:
                sys.exit(f"bench: {f} has a row of several seeds without per-seed forgetting")
            for i, seed in enumerate(row["seeds"]):
                per[seed] = {"acc": row["accs"][i], "forgetting": fgts[i], "seconds": row["seconds"],
                             "capacity": row["capacity"], "replay_bytes": row["replay_bytes"],
                             "memory_bytes": row["memory_bytes"], "footprint": row["footprint_bytes"],
                             "energy_j": row["energy_j"], "latency_s": row["latency_s"], "diverged": row["diverged"],
                             "backbone_seed": row["backbone_seeds"][i]}
    rows = []
    for (layer, size, strat), per in runs.items():
        seeds = sorted(per)
        fixed = all(per[s]["backbone_seed"] == 0 for s in seeds) and seeds != [0]
        args = argparse.Namespace(seeds=seeds, fixed_backbone=fixed)
        rows.append(summarize(layer, size, strat, [per[s] for s in seeds], args))
    out.write_text(json.dumps({"combined": [str(f) for f in files], "rows": rows}, indent=2))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tarball", type=Path, default=TARBALL)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 1500], help="latent replay capacities")
    ap.add_argument("--layers", nargs="+", default=["block2_1", "block3_1"])
    ap.add_argument("--epochs", type=int, default=2, help="epochs per experience")
    ap.add_argument("--pretrain-epochs", type=int, default=15,
                    help="backbone epochs (the tables in docs/results.md use 15)")
    ap.add_argument("--strategies", nargs="+",
                    default=["naive", "joint", "raw", "lr32", "8", "7", "6", "4", "3", "2", "eq4", "eq3", "eq2"],
                    help="naive, joint, raw (uint8 images at the 8-bit memory's bytes), lr32 (FP32 latents), "
                         "N (N-bit latents, same count), eqN (N-bit latents filling the 8-bit memory's bytes); "
                         "a trailing q (eq2q) also trains on new latents through the replay quantizer "
                         "(lr_quantize_new)")
    ap.add_argument("--fixed-backbone", action="store_true",
                    help="the seed-0 backbone for every seed (as the tables before issue 13)")
    ap.add_argument("--combine", type=Path, nargs="+",
                    help="merge the JSON files of runs of single seeds (e.g. one process per seed) into one table")
    ap.add_argument("--pretrain-threads", type=int, default=1,
                    help="threads for backbone pretraining (0: the run's own; see the docstring)")
    ap.add_argument("--quick", action="store_true", help="seed 0, size 1500, first layer only")
    ap.add_argument("--json", type=Path, default=Path("bench/qlr_cifar10.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.sizes, args.layers = [0], [1500], args.layers[:1]
    if args.combine:
        return combine(args.combine, args.json)
    torch.set_num_threads(torch.get_num_threads())
    spec = f"imagefolder:{data_root(extract(args.tarball))}"
    rows = []
    for layer in args.layers:
        results: dict = {}  # (size, strategy) -> per-seed (accuracy %, seconds, bytes, capacity)
        for seed in args.seeds:
            bb = backbone(spec, args.pretrain_epochs, 4, 0 if args.fixed_backbone else seed, args.pretrain_threads)
            t = time.perf_counter()
            cfg0 = validate({"data": spec, "backbone": str(bb), "model": "resnet8", "epochs": args.epochs,
                             "initial_classes": 4, "classes_per_experience": 2, "latent_layer": layer, "seed": 0})
            setup = build(cfg0, Path(tempfile.mkdtemp()), progress=True)
            print(f"{layer}, seed {seed}: latents {tuple(setup.latent_shape)} of {len(setup.train_latents)} + "
                  f"{len(setup.test_latents)} images in {time.perf_counter() - t:.0f} s", flush=True)
            for size in args.sizes:
                for strat in args.strategies:
                    if strat in ("naive", "joint") and size != args.sizes[0]:
                        continue  # no memory: one size is enough
                    results.setdefault((size, strat), []).append(one_run(cfg0, setup, seed, size, strat))
            del setup
        for (size, strat), runs in results.items():
            rows.append(summarize(layer, size, strat, runs, args))
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows},
                                        indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
