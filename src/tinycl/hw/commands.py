"""CLI subcommands ``tinycl profile`` and ``tinycl validate``; the lead's cli.py calls ``register``."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tinycl.errors import TinyclError
from tinycl.hw.cost import profile
from tinycl.hw.target import list_targets

_CONFIG_KEYS = {"model", "num_classes", "input_shape", "target", "precision", "latent_layer", "batch",
                "n_replays", "lr_bits", "step_batch"}


def register(subparsers) -> None:
    """Add ``profile`` and ``validate`` to an argparse subparsers object."""
    p = subparsers.add_parser("profile", help="modelled cost of one learning event on a device",
                              description="Per-layer MACs, cycles, latency, energy and peak memory of one "
                                          "learning event (INT8 frozen front + trained back) on a target.")
    p.add_argument("--model", help="zoo model name (tinycl.models.registry), FILE.py:FACTORY or FILE.onnx")
    p.add_argument("--input-shape", help="C,H,W of one sample (default: the zoo model's; needed for FILE.py)")
    p.add_argument("--num-classes", type=int, help="classes of the model's output (default: the zoo model's)")
    p.add_argument("--config", help="YAML file with keys: " + ", ".join(sorted(_CONFIG_KEYS)))
    p.add_argument("--target", help=f"built-in target ({', '.join(list_targets())}) or a YAML file path")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"],
                   help="training precision (default fp32; int8 = the 8-bit ETA policy, 1 byte per element)")
    p.add_argument("--latent-layer", help="split point: layers up to it are frozen (default: train all)")
    p.add_argument("--batch", type=int, help="new samples per learning event and step (default 1)")
    p.add_argument("--step-batch", type=int, help="samples per training step (default: --batch)")
    p.add_argument("--n-replays", type=int, help="latent replays stored and replayed per event (default 0)")
    p.add_argument("--lr-bits", type=int, help="bits per latent-replay element (default 8)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_profile)
    v = subparsers.add_parser("validate", help="published figures beside the cost model's figures",
                              description="Print the validation table of the cost models (docs/validation.md).")
    v.add_argument("--fast", action="store_true", help="one latent layer instead of three for VEGA/STM32L4")
    v.add_argument("--sensitivity", action="store_true",
                   help="for each prediction, the figure at both ends of every assumption's stated range")
    v.add_argument("--solve", action="store_true",
                   help="for each missing row, the unpublished values that reproduce the published figure")
    v.add_argument("--plot", metavar="FILE.png", help="with --sensitivity: write the tornado plot here "
                                                       "(default tinycl-sensitivity.png)")
    v.add_argument("--json", action="store_true", help="print JSON instead of a table")
    v.set_defaults(func=run_validate)


def _settings(args) -> dict:
    cfg = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise TinyclError(f"config file not found: {args.config}")
        try:
            cfg = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise TinyclError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(cfg, dict):
            raise TinyclError(f"config file {path}: top level must be a mapping")
        bad = sorted(set(cfg) - _CONFIG_KEYS)
        if bad:
            raise TinyclError(f"config file {path}: unknown key {bad[0]!r} (allowed: {', '.join(sorted(_CONFIG_KEYS))})")
    for k in ("model", "target", "precision", "latent_layer", "batch", "n_replays", "lr_bits", "step_batch"):
        v = getattr(args, k, None)
        if v is not None:
            cfg[k] = v
    if getattr(args, "input_shape", None):
        try:
            cfg["input_shape"] = [int(v) for v in args.input_shape.split(",")]
        except ValueError:
            raise TinyclError(f"--input-shape must be integers like 3,32,32, got {args.input_shape!r}") from None
    if getattr(args, "num_classes", None) is not None:
        cfg["num_classes"] = args.num_classes
    for k, d in (("precision", "fp32"), ("batch", 1), ("n_replays", 0), ("lr_bits", 8)):
        cfg.setdefault(k, d)
    if not cfg.get("model"):
        raise TinyclError("profile needs --model NAME or a --config file with 'model'")
    if not cfg.get("target"):
        raise TinyclError("profile needs --target NAME (or a YAML path)")
    return cfg


def run_profile(args) -> int:
    from tinycl.models.registry import create
    cfg = _settings(args)
    shape = tuple(cfg["input_shape"]) if cfg.get("input_shape") else None
    if str(cfg["model"]).endswith(".onnx"):   # the ONNX file's own graph
        from tinycl.graph.onnx import graph_from_onnx
        model = graph_from_onnx(cfg["model"])[0]
        in_shape = model.input_shape
    else:
        model = create(cfg["model"], num_classes=cfg.get("num_classes"), input_shape=shape)
        in_shape = model.input_shape
    p = profile(model, in_shape, cfg["target"], cfg["precision"], cfg.get("latent_layer"),
                int(cfg["batch"]), int(cfg["n_replays"]), int(cfg["lr_bits"]),
                step_batch=int(cfg["step_batch"]) if cfg.get("step_batch") else None)
    p["model"] = cfg["model"]
    print(json.dumps(p, indent=1) if args.json else format_profile(p))
    return 0


def format_profile(p: dict) -> str:
    """A per-layer table and totals of a profile."""
    head = (f"{p['model']} on {p['target']} ({p['precision']}, {p.get('mapping', '?')} mapping), "
            f"latent layer {p['latent_layer']}, "
            f"batch {p['batch']}, {p['n_replays']} replays at {p['lr_bits']} bit, {p['steps']} step(s)")
    lines = [head, f"{'layer':<24}{'type':<18}{'fwd MAC':>12}{'bwd-in MAC':>12}{'bwd-w MAC':>12}"
                   f"{'cycles':>14}{'ms':>10}{'mJ':>10}"]
    for r in p["layers"]:
        m = r["macs"]
        tag = " (frozen)" if r["frozen"] else ""
        lines.append(f"{(r['name'] + tag)[:23]:<24}{r['type'][:17]:<18}{m['forward']:>12,}{m['backward_input']:>12,}"
                     f"{m['backward_weight']:>12,}{r['cycles']:>14,.0f}{r['latency_s'] * 1e3:>10.3f}"
                     f"{r['energy_j'] * 1e3:>10.3f}")
    rp = p["replay"]
    lines.append(f"{'replay memory':<24}{'':<18}{'':>36}{rp['cycles']:>14,.0f}{rp['latency_s'] * 1e3:>10.3f}"
                 f"{rp['energy_j'] * 1e3:>10.3f}")
    t = p["total"]
    lines.append(f"{'TOTAL (MACs per step)':<24}{'':<18}{t['macs']['forward']:>12,}{t['macs']['backward_input']:>12,}"
                 f"{t['macs']['backward_weight']:>12,}{t['cycles']:>14,.0f}{t['latency_s'] * 1e3:>10.3f}"
                 f"{t['energy_j'] * 1e3:>10.3f}")
    mem = ", ".join(f"{k} {v / 1024:,.1f}/{t['capacity_bytes'][k] / 1024:,.0f} KiB"
                    for k, v in t["peak_memory_bytes"].items())
    lines.append(f"peak memory: {mem}")
    lines.append("placement: " + ", ".join(f"{g}->{lvl}" for g, lvl in p["memory"]["placement"].items()))
    lines.append(f"fits: {'yes' if t['fits'] else 'NO'}" + "".join(f"; {n}" for n in p["memory"]["notes"]))
    return "\n".join(lines)


def run_validate(args) -> int:
    from tinycl.hw import assumptions
    from tinycl.hw.validate import format_table, rows
    if getattr(args, "plot", None) and not getattr(args, "sensitivity", False):
        raise TinyclError("--plot needs --sensitivity")
    out, text = {}, []
    if getattr(args, "sensitivity", False):
        out["sensitivity"] = assumptions.sensitivity(fast=args.fast)
        path = args.plot or "tinycl-sensitivity.png"
        assumptions.tornado_png(out["sensitivity"], path)
        text += [assumptions.format_sensitivity(out["sensitivity"]), f"tornado plot: {path}"]
    if getattr(args, "solve", False):
        out["solve"] = assumptions.solve(fast=args.fast)
        text.append(assumptions.format_solve(out["solve"]))
    if not out:
        out["rows"] = rows(fast=args.fast)
        text.append(format_table(out["rows"]))
        out = out["rows"]
    print(json.dumps(out, indent=1, default=str) if args.json else "\n\n".join(text))
    return 0
