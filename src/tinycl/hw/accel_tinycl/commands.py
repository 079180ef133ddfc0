"""CLI: ``tinycl accel tinycl [--model NAME] [--target FILE] [--arch FILE] [--order snake|raster|both] [--json] [--plot FILE.png]``.

The lead's cli.py creates the ``accel`` parent parser and calls :func:`add_tinycl_parser`
with its subparsers (``register`` is the same, for callers that pass them directly).
"""

from __future__ import annotations


from tinycl.errors import TinyclError
from tinycl.report import jsonout


def run(args) -> int:
    if args.samples < 0:
        raise TinyclError(f"--samples must be >= 0, got {args.samples}")
    if args.replays is not None and args.replays < 0:
        raise TinyclError(f"--replays must be >= 0, got {args.replays}")
    from tinycl.models.registry import create

    from .arch import load_arch
    from .report import epoch_summary, format_table, plot_accesses

    arch = load_arch(args.arch, args.target)
    model = create(args.model)
    orders = ("raster", "snake") if args.order == "both" else (args.order,)
    summary = epoch_summary(arch, model, model.input_shape, orders, samples=args.samples, replays=args.replays)
    if args.plot:
        plot_accesses(summary, args.plot)
    print(jsonout.dumps(summary, indent=2) if args.json else format_table(summary))
    return 0


def add_tinycl_parser(accel_subparsers) -> None:
    """Add the ``tinycl`` subcommand to the ``accel`` command's subparsers."""
    p = accel_subparsers.add_parser("tinycl", help="TinyCL CL accelerator: per-layer cycles, accesses, epoch time/energy",
                                    description="Model a training epoch on the TinyCL processing unit "
                                                "(window order, MAC array, on-chip memories, rehearsal control).")
    p.add_argument("--model", default="tinycl-net", help="zoo model name (Conv/ReLU/Flatten/Linear only)")
    p.add_argument("--target", default=None, help="shared target file or name for clock and power "
                                                  "(default: the one the architecture file names)")
    p.add_argument("--arch", default=None, help="architecture YAML (default: built-in tinycl_pu.yaml)")
    p.add_argument("--order", choices=("snake", "raster", "both"), default="both", help="sliding-window order")
    p.add_argument("--samples", type=int, default=50_000, help="new samples per epoch (CIFAR-10: 50000)")
    p.add_argument("--replays", type=int, default=None, help="rehearsal steps per new sample (default: from the YAML)")
    p.add_argument("--json", action="store_true", help="print JSON (layers, total) instead of the table")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="write a bar plot of reads per layer pass")
    p.set_defaults(func=run)


register = add_tinycl_parser
