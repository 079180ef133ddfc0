"""tinycl's continual-learning methods beside Avalanche's, on one backbone, stream and data (issue 16).

Protocol (bench/qlr_cifar10.py's): ResNet-8 backbone from its cache (one per seed, pretrained on
the first 4 classes), the front frozen up to ``--layer`` (block2_1), the back trained with SGD
lr 0.01, momentum 0.9, weight decay 5e-4, ``--epochs`` (2) per experience, 32 new + 32 replayed
samples per step, a stream of 4 initial classes then 3 x 2, ``--mem`` (1500) memory slots.

- tinycl: ``tinycl.cl.runner.run`` with its defaults: INT8 front, latents stored at
  ``--lr-bits`` (8), the engine's FP32 training. ``replay`` is strategy latent_replay.
- Avalanche 0.6.0: the float back (a copy of the backbone's torch modules after the latent
  layer) trained by Avalanche's strategy on the FP32 front's latents (the torch front in eval
  mode, computed once and fed as tensor datasets, one per experience of tinycl's stream):
  ``Naive``; ``Naive`` + ``ReplayPlugin(mem, batch_size=32, batch_size_mem=32)`` (replay);
  ``LwF(alpha=1, temperature=2)``; ``EWC(lambda=100, mode=online, decay_factor=1)``;
  ``SynapticIntelligence(si_lambda=0.1, eps=0.001)``; ``DER(mem, batch_size_mem=32,
  alpha=0.1, beta=0.5)``; ``ER_ACE(mem, batch_size_mem=32)``; ``GDumb(mem)``;
  ``StreamingLDA(shrinkage 1e-4)`` on the latents average-pooled to their channels (as tinycl's
  slda; one pass, the back is not used). These are tinycl's defaults for the same methods
  (docs/strategies.md). Equal slots: Avalanche's memory holds FP32 latents, tinycl's 8-bit
  ones. Avalanche's SLDA weights each covariance update by the global count (the paper's
  code), tinycl's by the class count (the exact pooled covariance), and Avalanche scores
  classes not seen yet (zero means) where tinycl does not.
- Both are tested after every experience on the test images of the experiences seen so
  far (argmax over all 10 outputs); accuracy = pooled seen accuracy at the end, forgetting =
  tinycl's (Mammoth's) definition, on the same accuracy matrix.

Seeds (``--seeds``) change the backbone (full mode), the training order, replay sampling and
memory choices of both libraries (Avalanche through its ``RNGManager``). ``--quick``: the
shipped CIFAR-10 subset with the shipped backbone, 1 seed, 1 epoch, and 250 training images per
class (``--train-per-class``): a few minutes on 2 cores.

Install Avalanche beside the CPU torch 2.13 and torchvision 0.28 of ``make test`` (its PyPI
requirements would pull wandb, a CUDA build of nothing we need, and more):

    .venv/bin/pip install -e ".[avalanche]"              # its dependencies that are imported
    .venv/bin/pip install --no-deps avalanche-lib==0.6.0

The extra holds what ``import avalanche.training`` needs: dill, gdown (+ beautifulsoup4,
soupsieve), pytorchcv, psutil, GPUtil, torchmetrics (+ lightning-utilities), tensorboard
(+ absl-py), qpsolvers (+ scipy). Two modules are stubbed by this script as empty modules:
``torchvision._meta_registrations`` (as tests/realmodels.py: the PyPI torchvision's compiled
ops need a CUDA torch; the model code does not) and ``wandb`` (imported at module level by
Avalanche's confusion-matrix metric; no logger is used here).

    .venv/bin/python bench/avalanche_compare.py --quick
    .venv/bin/python bench/avalanche_compare.py --seeds 0 1 2      # the full CIFAR-10 comparison
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
import types
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tinycl.cl.backbone import to_input
from tinycl.cl.config import validate
from tinycl.cl.metrics import AccuracyMatrix, forgetting
from tinycl.cl.runner import run
from tinycl.cl.setup import build

METHODS = ("naive", "replay", "lwf", "ewc", "si", "derpp", "er_ace", "gdumb", "slda")
TINYCL = {"replay": "latent_replay"}  # method -> tinycl strategy (others: same name)


def avalanche():
    """The Avalanche modules used here (with the two stubs of the docstring), or exit with one line."""
    warnings.filterwarnings("ignore", module="avalanche|qpsolvers")  # deprecations, no QP solver (GEM only)
    for name in ("torchvision._meta_registrations", "wandb"):
        sys.modules.setdefault(name, types.ModuleType(name))
    try:
        import avalanche as av
        from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
        from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset as tensor_ds
        from avalanche.training import supervised as S
        from avalanche.training.determinism.rng_manager import RNGManager
        from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin
    except ImportError as e:
        sys.exit(f"avalanche_compare: Avalanche does not import ({e}); install it as the docstring says")
    return types.SimpleNamespace(version=av.__version__, benchmark=benchmark_from_datasets, tensor_ds=tensor_ds,
                                 S=S, rng=RNGManager, Evaluation=EvaluationPlugin, Replay=ReplayPlugin)


# ----------------------------------------------------------------------------- the shared setup
def make_setup(args, seed: int):
    """tinycl's setup (data, INT8 front, latents, stream) and the base config of every tinycl run."""
    if args.quick:
        base = {"data": "shipped", "backbone": "shipped"}
    else:
        sys.path.insert(0, str(Path(__file__).parent))
        import qlr_cifar10 as Q
        spec = f"imagefolder:{Q.data_root(Q.extract(args.tarball))}"
        base = {"data": spec, "backbone": str(Q.backbone(spec, args.pretrain_epochs, 4, seed))}  # qlr's threads
    cfg0 = validate(dict(base, model="resnet8", epochs=args.epochs, initial_classes=4, classes_per_experience=2,
                         latent_layer=args.layer, seed=0, n_replays=args.mem, lr_bits=args.lr_bits,
                         batch_size=32, replay_batch=32, learning_rate=0.01, momentum=0.9, weight_decay=5e-4))
    setup = build(cfg0, Path(tempfile.mkdtemp()), progress=False)
    if args.train_per_class:
        trim(setup, args.train_per_class)
    return cfg0, setup


def trim(setup, per_class: int) -> None:
    """Keep the first ``per_class`` training images of each class in every experience (same for both)."""
    y = setup.dataset.train.y
    for e in setup.stream:
        keep = [e.train_idx[y[e.train_idx] == c][:per_class] for c in e.classes]
        e.train_idx = torch.sort(torch.cat(keep)).values


def split_model(setup, layer: str) -> tuple[nn.Module, nn.Module]:
    """(front, back) torch modules of the backbone model cut after top-level child ``layer``."""
    names = [n for n, _ in setup.model.named_children()]
    if not isinstance(setup.model, nn.Sequential) or layer not in names:
        sys.exit(f"avalanche_compare: the model must be a named nn.Sequential with a child {layer!r}")
    cut = names.index(layer) + 1
    children = list(setup.model.named_children())
    front = nn.Sequential(OrderedDict(children[:cut])).eval()
    back = nn.Sequential(OrderedDict(children[cut:]))
    return front, copy.deepcopy(back)


@torch.no_grad()
def float_latents(front: nn.Module, setup, x_uint8: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """FP32 latents of uint8 images through the torch front (eval mode)."""
    return torch.cat([front(to_input(x_uint8[i:i + batch], setup.mean, setup.std))
                      for i in range(0, len(x_uint8), batch)])


# ----------------------------------------------------------------------------- one run of each library
def tinycl_run(method: str, cfg0: dict, setup, seed: int) -> dict:
    cfg = dict(cfg0, seed=seed, strategy=TINYCL.get(method, method))
    t = time.perf_counter()
    res = run(cfg, Path(tempfile.mkdtemp()) / "r", progress=False, setup=setup)
    return {"accuracy": 100 * res["average_accuracy"],
            "forgetting": None if res["forgetting"] is None else 100 * res["forgetting"],
            "memory_bytes": res["replay_memory_bytes"]["total"], "footprint_bytes": res["footprint_bytes"]["total"],
            "seconds": time.perf_counter() - t, "diverged": res["diverged"]}


QLR_NAME = {"replay": "8"}  # method -> its row in bench/qlr_cifar10.py's JSON (others: same name)


def tinycl_from(path: Path, method: str, seed: int, args) -> dict | None:
    """tinycl's result of ``method`` on ``seed`` from a bench/qlr_cifar10.py JSON (same protocol,
    backbone, stream and seeds: its runs need not be repeated), or None when it has no such row."""
    for row in json.loads(path.read_text())["rows"]:
        if (row["strategy"] == QLR_NAME.get(method, method) and row["layer"] == args.layer
                and row["size"] == args.mem and seed in row["seeds"]):
            i = row["seeds"].index(seed)
            return {"accuracy": row["accs"][i], "forgetting": row["forgettings"][i],
                    "memory_bytes": row["replay_bytes"], "footprint_bytes": row["footprint_bytes"],
                    "seconds": row["seconds"], "diverged": row["diverged"], "from": str(path)}
    return None


def avalanche_strategy(av, method: str, model: nn.Module, args):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    common = dict(model=model, optimizer=opt, criterion=nn.CrossEntropyLoss(), train_mb_size=32,
                  train_epochs=args.epochs, eval_mb_size=500, device="cpu", evaluator=av.Evaluation(loggers=[]),
                  eval_every=-1)
    S, mem = av.S, args.mem
    if method == "naive":
        return S.Naive(**common)
    if method == "replay":
        return S.Naive(**common, plugins=[av.Replay(mem_size=mem, batch_size=32, batch_size_mem=32)])
    if method == "lwf":
        return S.LwF(**common, alpha=1.0, temperature=2.0)
    if method == "ewc":
        return S.EWC(**common, ewc_lambda=100.0, mode="online", decay_factor=1.0)
    if method == "si":
        return S.SynapticIntelligence(**common, si_lambda=0.1, eps=0.001)
    if method == "derpp":
        return S.DER(**common, mem_size=mem, batch_size_mem=32, alpha=0.1, beta=0.5)
    if method == "er_ace":
        return S.ER_ACE(**common, mem_size=mem, batch_size_mem=32)
    if method == "gdumb":
        return S.GDumb(**common, mem_size=mem)
    if method == "slda":
        c = args.latent_channels
        pooled = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        del common["model"], common["optimizer"]
        common["train_epochs"] = 1
        return S.StreamingLDA(slda_model=pooled, input_size=c, num_classes=args.num_classes, shrinkage_param=1e-4,
                              streaming_update_sigma=True, **common)
    raise ValueError(method)


def predict(strategy, x: torch.Tensor) -> torch.Tensor:
    """Labels that an Avalanche strategy's model gives latents ``x`` (SLDA: its LDA head on the features)."""
    out = strategy.model(x)
    return (strategy.predict(out) if hasattr(strategy, "muK") else out).argmax(1)


def avalanche_run(av, method: str, back: nn.Module, setup, lat: dict, seed: int, args) -> dict:
    """Avalanche's ``method`` on the FP32 latents ``lat`` (train, test) of tinycl's stream."""
    ytr, yte = setup.dataset.train.y, setup.dataset.test.y
    train = [av.tensor_ds(lat["train"][e.train_idx], ytr[e.train_idx], task_labels=0) for e in setup.stream]
    bench = av.benchmark(train=train, test=[av.tensor_ds(lat["test"][e.test_idx], yte[e.test_idx], task_labels=0)
                                            for e in setup.stream])
    av.rng.set_random_seeds(seed)
    model = copy.deepcopy(back)
    args.latent_channels, args.num_classes = lat["train"].shape[1], setup.dataset.num_classes
    strategy = avalanche_strategy(av, method, model, args)
    acc = AccuracyMatrix(len(setup.stream))
    t = time.perf_counter()
    for i, exp in enumerate(bench.train_stream):
        strategy.train(exp)
        strategy.model.eval()
        with torch.no_grad():
            for j, e in enumerate(setup.stream[:i + 1]):
                pred = torch.cat([predict(strategy, lat["test"][e.test_idx[a:a + 500]])
                                  for a in range(0, len(e.test_idx), 500)])
                acc.record(i, j, int((pred == yte[e.test_idx]).sum()), len(e.test_idx))
    _, mean_f = forgetting(acc.matrix)
    mem = 0 if method in ("naive", "lwf", "ewc", "si", "slda") else args.mem * lat["train"][0].numel() * 4
    return {"accuracy": 100 * float(acc.seen_accuracy()[-1]),
            "forgetting": None if np.isnan(mean_f) else 100 * float(mean_f), "memory_bytes": mem,
            "seconds": time.perf_counter() - t}


# ----------------------------------------------------------------------------- table
def _stat(runs: list[dict], key: str) -> tuple[float | None, float | None]:
    v = [r[key] for r in runs if r.get(key) is not None]
    if not v:
        return None, None
    return statistics.mean(v), statistics.pstdev(v) if len(v) > 1 else 0.0


def _fmt(m, s) -> str:
    return "-" if m is None else f"{m:.1f} ± {s:.1f}"


def table(rows: dict, methods) -> str:
    out = ["| method | tinycl acc % | Avalanche acc % | tinycl forgetting % | Avalanche forgetting % | "
           "tinycl replay memory bytes | Avalanche replay memory bytes (FP32 latent payload) |",
           "|---|---|---|---|---|---|---|"]
    for m in methods:
        t, a = rows[m]["tinycl"], rows[m]["avalanche"]
        out.append(f"| {m} | {_fmt(*_stat(t, 'accuracy'))} | {_fmt(*_stat(a, 'accuracy'))} | "
                   f"{_fmt(*_stat(t, 'forgetting'))} | {_fmt(*_stat(a, 'forgetting'))} | "
                   f"{t[-1]['memory_bytes']:,} | {a[-1]['memory_bytes']:,} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--epochs", type=int, default=2, help="epochs per experience")
    ap.add_argument("--mem", type=int, default=1500, help="memory slots (both libraries)")
    ap.add_argument("--lr-bits", type=int, default=8, help="bits of tinycl's stored latents")
    ap.add_argument("--layer", default="block2_1", help="latent layer")
    ap.add_argument("--train-per-class", type=int, default=0, help="training images kept per class (0: all)")
    ap.add_argument("--pretrain-epochs", type=int, default=15)
    ap.add_argument("--tarball", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-images.tar.gz")
    ap.add_argument("--quick", action="store_true", help="shipped data and backbone, 1 seed, 1 epoch, 250 per class")
    ap.add_argument("--json", type=Path, default=Path("bench/avalanche_compare.json"))
    ap.add_argument("--tinycl-from", type=Path, metavar="JSON",
                    help="take tinycl's results from a bench/qlr_cifar10.py JSON of the same protocol and seeds "
                         "(e.g. bench/results/qlr_reproduce.json) instead of running them again")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs = args.seeds[:1], 1
        args.train_per_class = args.train_per_class or 250
    av = avalanche()
    rows = {m: {"tinycl": [], "avalanche": []} for m in args.methods}
    setup = None
    for seed in args.seeds:
        if setup is None or not args.quick:  # the full mode has one backbone per seed
            cfg0, setup = make_setup(args, seed)
            front, back = split_model(setup, args.layer)
            lat = {"train": float_latents(front, setup, setup.dataset.train.x),
                   "test": float_latents(front, setup, setup.dataset.test.x)}
        for m in args.methods:
            got = tinycl_from(args.tinycl_from, m, seed, args) if args.tinycl_from else None
            rows[m]["tinycl"].append(got or tinycl_run(m, cfg0, setup, seed))
            rows[m]["avalanche"].append(avalanche_run(av, m, back, setup, lat, seed, args))
            t, a = rows[m]["tinycl"][-1], rows[m]["avalanche"][-1]
            print(f"seed {seed} {m}: tinycl {t['accuracy']:.1f}% ({t['seconds']:.0f} s), "
                  f"Avalanche {a['accuracy']:.1f}% ({a['seconds']:.0f} s)", flush=True)
    out = {"args": {k: str(v) for k, v in vars(args).items()}, "avalanche_version": av.version,
           "torch_version": torch.__version__, "rows": rows}
    args.json.write_text(json.dumps(out, indent=2))
    print(table(rows, args.methods))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
