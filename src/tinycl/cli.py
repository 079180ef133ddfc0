"""The ``tinycl`` command line.

Exit codes: 0 success, 1 unexpected error, 2 user error (one line on stderr), 3 the run
finished but its training diverged (the loss was not finite; results.json says ``diverged``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from . import __version__
from .errors import TinyclError


def _run(args) -> int:
    from .cl import config as C
    from .cl.checkpoint import folder_lock
    from .cl.runner import run
    from .report import jsonout
    from .report.run_report import diverged_line, plots, summary

    if args.resume:
        if args.config or args.set or args.data or args.model:
            raise TinyclError("--resume takes the config saved in the run folder; drop --config/--set/--data/--model")
        out = args.resume
        cfg = {}
        if not os.path.isdir(out):
            raise TinyclError(f"no run to resume in {out}: no such folder")
    else:
        cfg = C.load_file(args.config) if args.config else {}
        if args.data:
            cfg["data"] = args.data
        if args.model:
            cfg["model"] = args.model
        cfg = C.apply_sets(cfg, args.set)
        cfg = C.validate(cfg)
        out = args.out
    _check_target(cfg, out, bool(args.resume))
    with folder_lock(out):  # results and plots are written under the run's lock
        res = run(cfg, out, resume=bool(args.resume), progress=not args.quiet and not args.json,
                  annotate=event_cost)
        plots(res, out)
    if args.json:
        print(jsonout.dumps(res))
    else:
        print(summary(res))
        print(f"\nresults: {out}/results.json, {out}/accuracy.png, {out}/memory.png")
    if res.get("diverged"):
        print(f"tinycl: {diverged_line(res)}", file=sys.stderr)
        return 3
    return 0


def _check_target(cfg: dict, out: str, resume: bool) -> None:
    """Resolve the configured target before any work (a bad one would fail only at the end)."""
    from .cl.config import DEFAULTS
    from .cl.runner import saved_config
    from .hw.target import load_target

    if resume:
        cfg = saved_config(out)
        if cfg is None:  # no readable run here: run() says exactly why
            return
    target = cfg.get("target", DEFAULTS["target"])
    if not isinstance(target, str):
        raise TinyclError(f"config: 'target' must be a target name or a YAML path, got {target!r}")
    try:
        load_target(target)
    except TinyclError as e:
        raise TinyclError(f"config: 'target': {e}") from None


def event_cost(setup, cfg) -> dict | None:
    """Modelled latency and energy of one learning event on the configured target (replays priced only
    for strategies whose steps mix them in)."""
    from .cl.strategies import REGISTRY
    from .hw.cost import learning_event_cost

    bits = cfg["lr_bits"] if isinstance(cfg["lr_bits"], int) else {"fp16": 16, "fp32": 32}[cfg["lr_bits"]]
    replays = cfg["replay_batch"] if REGISTRY[cfg["strategy"]].replays_per_step else 0
    return learning_event_cost(setup.model, setup.dataset.image_shape, cfg["latent_layer"], cfg["target"],
                               cfg["precision"], cfg["batch_size"], replays, bits)


def _pretrain(args) -> int:
    if args.batch_size < 1:
        raise TinyclError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise TinyclError(f"--lr must be a finite number > 0, got {args.lr}")
    from .cl.backbone import pretrain, save_backbone
    from .cl.checkpoint import check_writable
    from .cl.config import validate
    from .cl.scenarios import class_incremental
    from .data import load
    from .report import jsonout

    cfg = validate({"data": args.data, "model": args.model, "initial_classes": args.initial_classes,
                    "seed": args.seed, "pretrain_epochs": args.epochs})
    check_writable(args.out)  # a directory or an unwritable path fails now, not after training
    ds = load(cfg["data"])
    stream = class_incremental(ds, cfg["initial_classes"], 1, seed=cfg["seed"])
    first = stream[0]
    b = pretrain(cfg["model"], ds.train.x[first.train_idx], ds.train.y[first.train_idx], ds.num_classes,
                 first.classes, cfg["pretrain_epochs"], batch_size=args.batch_size, lr=args.lr, seed=cfg["seed"],
                 progress=not args.quiet)
    n = save_backbone(args.out, b)
    from .cl.backbone import build_model
    from .cl.backbone import to_input
    model = build_model(b)
    test = ds.test
    import torch
    mask = torch.isin(test.y, torch.tensor(first.classes))
    with torch.no_grad():
        pred = model(to_input(test.x[mask], b["mean"], b["std"])).argmax(1)
    acc = float((pred == test.y[mask]).float().mean())
    info = {"out": args.out, "bytes": n, "model": cfg["model"], "classes": first.classes,
            "test_accuracy_initial_classes": acc}
    print(jsonout.dumps(info, indent=None) if args.json else
          f"backbone {cfg['model']} on classes {first.classes}: test accuracy {100 * acc:.1f}% "
          f"on those classes; wrote {args.out} ({n:,} bytes)")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors as one line (``tinycl: error: ...``, exit status 2)."""

    def error(self, message):
        where = self.prog[len("tinycl"):].strip()
        self.exit(2, f"tinycl: error: {where + ': ' if where else ''}{message} (see {self.prog} --help)\n")


def _export(args) -> int:
    from .cli_export import export_run
    from .report import jsonout
    info = export_run(args.run, args.out, args.max_new, args.replay_batch, args.seed)
    print(jsonout.dumps(info, indent=1) if args.json else
          f"wrote {info['out']}: {info['front_ops']} front ops, {info['back_ops']} back ops, arena "
          f"{info['arena_bytes']:,} bytes, {info['replay_capacity']} replays at {info['latent_bits']} bits; "
          f"`make -C {info['out']}` builds it for the host, `make -C {info['out']} m4` for a Cortex-M4")
    return 0


def _layers(args) -> int:
    from .graph import capture
    from .graph.table import format_layers, layer_rows
    from .models.registry import create
    from .report import jsonout

    shape = None
    if args.input_shape:
        try:
            shape = tuple(int(v) for v in args.input_shape.split(","))
        except ValueError:
            raise TinyclError(f"--input-shape must be integers like 3,32,32, got {args.input_shape!r}") from None
        if not shape or min(shape) < 1:
            raise TinyclError(f"--input-shape must be positive integers, got {args.input_shape!r}")
    if args.num_classes < 1:
        raise TinyclError(f"--num-classes must be >= 1, got {args.num_classes}")
    if args.model.endswith(".onnx"):
        from .graph.onnx import graph_from_onnx
        graph = graph_from_onnx(args.model)[0]
    else:
        model = create(args.model, num_classes=args.num_classes, input_shape=shape)
        graph = capture(model, model.input_shape)
    rows = layer_rows(graph)
    print(jsonout.dumps({"model": args.model, "input_shape": list(graph.input_shape), "layers": rows}, indent=1)
          if args.json else format_layers(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tinycl", description="On-device continual learning: quantized latent "
                                "replay, explicit training kernels, device cost models.")
    p.add_argument("--version", action="version", version=f"tinycl {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="run a continual-learning experiment (the main job)",
                       description="Class-incremental learning with (quantized) latent replay. With no "
                                   "arguments: the shipped CIFAR-10 subset and backbone.")
    r.add_argument("--config", help="YAML config file (keys: see docs/cli.md)")
    r.add_argument("--data", help="shipped | cifar10:PATH | imagefolder:PATH[?size=HxW&channels=C] | "
                                  "core50:PATH[?scenario=S&run=R] (see docs/data.md)")
    r.add_argument("--model", help="zoo name, or your own model as FILE.py:FACTORY (same as --set model=...)")
    r.add_argument("--out", default="runs/latest", help="output folder (default runs/latest)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    r.add_argument("--resume", metavar="DIR", help="continue an interrupted run from its folder")
    r.add_argument("--json", action="store_true", help="print results.json to stdout instead of the table")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=_run)

    t = sub.add_parser("pretrain", help="train a backbone on the initial classes and save it",
                       description="The factory phase: train a zoo model on the first classes of a dataset "
                                   "with tinycl's own training engine, and save it as a backbone file.")
    t.add_argument("--data", default="shipped", help="a data spec, as for tinycl run")
    t.add_argument("--model", default="resnet8")
    t.add_argument("--initial-classes", type=int, default=4)
    t.add_argument("--epochs", type=int, default=15)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True, help="backbone file to write")
    t.add_argument("--json", action="store_true")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=_pretrain)

    ex = sub.add_parser("export", help="the C project of a finished run's learner (docs/deploy.md)",
                        description="Write a self-contained C99 project of the learner of a finished `tinycl run`: "
                                    "INT8 front, packed replay memory, FP32 or FP16 back with its current weights, "
                                    "bit-exact with the emulation (docs/deploy.md).")
    ex.add_argument("--run", required=True, metavar="DIR", help="the run folder (config.json, state.ckpt)")
    ex.add_argument("--out", required=True, metavar="DIR", help="the project folder to create (must be new or empty)")
    ex.add_argument("--max-new", type=int, default=8, help="new samples per learning event (default 8)")
    ex.add_argument("--replay-batch", type=int, default=8, help="replays per learning event (default 8)")
    ex.add_argument("--seed", type=int, default=0, help="seed of the device's PCG32 replay generator")
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(func=_export)

    ly = sub.add_parser("layers", help="the nodes of a model: output shape, parameters, MACs, split points",
                        description="Capture a model (zoo name or FILE.py:FACTORY) and list its nodes, to "
                                    "choose a latent layer.")
    ly.add_argument("--model", default="resnet8", help="zoo name, FILE.py:FACTORY or FILE.onnx")
    ly.add_argument("--input-shape", help="C,H,W (default: the zoo model's; required for FILE.py models)")
    ly.add_argument("--num-classes", type=int, default=10)
    ly.add_argument("--json", action="store_true")
    ly.set_defaults(func=_layers)

    from .hw.commands import register as register_hw
    register_hw(sub)
    _register_accel(sub)
    from .sweep.commands import register as register_sweep
    register_sweep(sub)
    return p


def _register_accel(sub) -> None:
    a = sub.add_parser("accel", help="accelerator models (tinycl ASIC, ETA FPGA)",
                       description="Computing, cycle-counting models of continual-learning accelerators.")
    accel_sub = a.add_subparsers(dest="accel", metavar="ACCEL")
    a.set_defaults(func=lambda args: (a.print_help(), 2)[1])
    from .hw.accel_eta.commands import add_eta_parser
    from .hw.accel_tinycl.commands import add_tinycl_parser
    add_tinycl_parser(accel_sub)
    add_eta_parser(accel_sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except TinyclError as e:
        print(f"tinycl: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # an output folder that cannot be made, a full disk, ...
        print(f"tinycl: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tinycl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
