"""CLI: ``tinycl accel eta [--model NAME] [--target FILE] [--batch B] [--json]``.

The lead's cli.py creates the ``accel`` parser and calls :func:`add_eta_parser` with its subparsers.
"""

from __future__ import annotations


from tinycl.errors import TinyclError
from tinycl.report import jsonout

from .config import load_array
from .model import eta_training_step

PUBLISHED_GOPS = {"vgg-cifar": 610.98, "resnet20": 658.64, "resnet18": 811.24}   # ETA, TNNLS 2023


def add_eta_parser(accel_subparsers) -> None:
    """Add the ``eta`` subcommand (per-layer table and totals of one training step)."""
    p = accel_subparsers.add_parser("eta", help="ETA PE-array model: cycles and GOPS of one training step",
                                    description="Cycles, latency and GOPS of one 8-bit training step on the ETA "
                                                "PE-array model, with the MACs saved by stride-aware input gradients.")
    p.add_argument("--model", default="resnet20", help="zoo model name (default resnet20; resnet18 runs at 224x224)")
    p.add_argument("--target", default=None, help="array YAML file (default: the built-in eta-array.yaml)")
    p.add_argument("--device", default=None, help="device target for clock and DDR (default: the one the array file names)")
    p.add_argument("--batch", type=int, default=None,
                   help="samples per training step (default: training.batch of the array file, 32)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_eta)


def run_eta(args) -> int:
    if args.batch < 1:
        raise TinyclError(f"--batch must be >= 1, got {args.batch}")
    from tinycl.models.registry import create
    cfg = load_array(args.target, getattr(args, "device", None))
    model = create(args.model)
    r = eta_training_step(model, model.input_shape, cfg, args.batch)
    r["model"] = args.model
    r["published_gops"] = PUBLISHED_GOPS.get(args.model)
    print(jsonout.dumps(r, indent=1) if args.json else format_eta(r))
    return 0


def format_eta(r: dict) -> str:
    lines = [f"ETA model, {r['model']}, batch {r['batch']}: array {r['array']} ({r['pes']} PEs, "
             f"{r['clock_hz'] / 1e6:.0f} MHz, peak {r['peak_gops']:.1f} GOPS)",
             f"{'layer':<28}{'kind':<12}{'fwd cyc':>12}{'dX cyc':>12}{'dW cyc':>12}{'upd cyc':>10}{'MACs':>14}"
             f"{'MACs saved':>14}"]
    for l in r["layers"]:
        c = l["cycles"]
        lines.append(f"{l['name'][:27]:<28}{l['kind']:<12}{c.get('forward', 0):>12}{c.get('backward_input', 0):>12}"
                     f"{c.get('backward_weight', 0):>12}{c.get('update', 0):>10}{sum(l['macs'].values()):>14}"
                     f"{l['macs_saved_strided']:>14}")
    pub = r.get("published_gops")
    lines += [f"total: {r['cycles']} cycles (array {r['array_cycles']}, unified core {r['core_cycles']}), "
              f"{r['latency_s'] * 1e3:.3f} ms per step, {r['macs']} MACs",
              f"throughput: {r['gops']:.1f} GOPS (utilisation {r['utilisation']:.2f})"
              + (f"; published {pub} GOPS" if pub else ""),
              f"stride-aware input gradient saves {r['macs_saved_strided']} MACs and "
              f"{r['cycles_saved_strided']} array cycles"]
    return "\n".join(lines)
