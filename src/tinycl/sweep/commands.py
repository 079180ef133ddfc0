"""The ``tinycl sweep`` subcommand."""

from __future__ import annotations

from ..errors import TinyclError


def _sweep(args) -> int:
    from ..report import jsonout
    from . import spec as S
    from .execute import sweep
    from .output import summary

    if args.num_cpus is not None and args.num_cpus < 1:
        raise TinyclError(f"--num-cpus must be >= 1, got {args.num_cpus}")
    if args.address is not None and not args.address.strip():
        raise TinyclError("--address must name a Ray cluster (host:port or ray://host:port)")
    if args.data and not args.config:
        raise TinyclError("--data applies to a new sweep; give --config SWEEP.yaml with it")
    spec = S.read(args.config, args.data) if args.config else None
    if spec is None and not args.resume:
        raise TinyclError("a sweep file is needed: --config SWEEP.yaml (or --resume to continue one)")
    if args.retry_failed and not args.resume:
        raise TinyclError("--retry-failed goes with --resume (it reruns the failed trials of a sweep)")
    res = sweep(spec, args.out, address=args.address, resume=args.resume, progress=not args.quiet,
                num_cpus=args.num_cpus, retry_failed=args.retry_failed)
    if args.json:
        print(jsonout.dumps({"trials": res["rows"], "recommended": res["recommended"]}))
    else:
        print(summary(res, res["spec"]))
        o = res["out"]
        print(f"\nresults: {o}/trials.csv, {o}/trials.json, {o}/pareto.png, {o}/report.html, "
              f"{o}/recommended.yaml")
    return 0


def register(sub) -> None:
    s = sub.add_parser("sweep", help="search configurations for a device on Ray (accuracy vs memory, energy)",
                       description="Design-space exploration: every trial is a real tinycl run, trials over "
                                   "the device constraints are pruned by the cost model first (docs/sweep.md).")
    s.add_argument("--config", help="sweep file (YAML: base, axes, search, constraints, objectives, targets)")
    s.add_argument("--data", help="data spec for every trial (overrides the base config's data)")
    s.add_argument("--out", default="runs/sweep", help="output folder (default runs/sweep)")
    s.add_argument("--address", help="an existing Ray cluster (default: a local Ray on this machine's cores)")
    s.add_argument("--resume", action="store_true", help="continue the sweep in --out; finished trials are kept")
    s.add_argument("--retry-failed", action="store_true",
                   help="with --resume: run the failed trials again (ok and pruned ones are kept)")
    s.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all of this machine's)")
    s.add_argument("--json", action="store_true", help="print the trials as JSON instead of the table")
    s.add_argument("--quiet", action="store_true", help="no progress lines")
    s.set_defaults(func=_sweep)
