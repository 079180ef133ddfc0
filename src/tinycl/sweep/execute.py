"""The sweep driver: plan, prune by cost, run the rest on Ray, write results as each trial ends.

Folder layout (``DIR``): ``sweep.json`` (the checked spec), ``trials/<id>/`` (a tinycl run
folder per trial, and ``trial.json``, the trial's row, written atomically when it ends),
``cache/`` (shared factory backbones), ``trials.json``, ``trials.csv``, ``pareto.png``,
``report.html``, ``recommended.yaml``. The whole sweep holds ``DIR/.tinycl.lock``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

from ..cl.checkpoint import folder_lock
from ..errors import TinyclError
from ..report import jsonout
from . import spec as S
from .cost import CostModel, prune_reason
from .pareto import recommend
from .trial import SETUP_KEYS, build_setup, can_share, key_of, run_trial

SPEC = "sweep.json"


def _start_ray(address: str | None, num_cpus: int | None):
    """Connect to ``address``, or start a local Ray on this machine's cores; returns (ray, started)."""
    if address:
        _token_mode()  # before Ray is imported: it reads the mode once
    try:
        import ray
    except ImportError:
        raise TinyclError("tinycl sweep needs Ray: pip install 'tinycl[sweep]'") from None
    if ray.is_initialized():
        return ray, False
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                     logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"at {address}" if address else "locally"
        raise TinyclError(f"cannot start or reach Ray {where}: {str(e).splitlines()[0] if str(e) else e!r}") \
            from None
    return ray, True


def _token_mode() -> None:
    """Send Ray's auth token to a cluster when this machine has one (as ``ray start`` does: it runs in
    token mode when RAY_AUTH_MODE is unset and a token exists); an explicit RAY_AUTH_MODE is kept."""
    if os.environ.get("RAY_AUTH_MODE") is not None:
        return
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or Path(path).is_file():
        os.environ["RAY_AUTH_MODE"] = "token"


def _open_folder(out: Path, spec: dict | None, resume: bool) -> dict:
    """The spec of this sweep (checked against a saved one); writes ``sweep.json``."""
    saved = None
    if (out / SPEC).exists():
        try:
            saved = json.loads((out / SPEC).read_text())
        except (OSError, ValueError) as e:
            raise TinyclError(f"{out / SPEC} cannot be read: {e}".splitlines()[0]) from None
    if resume:
        if saved is None:
            raise TinyclError(f"no sweep to resume in {out}: {SPEC} not found")
        if spec is not None and spec != saved:
            raise TinyclError(f"{out} holds a sweep of another sweep file; resume it without --config "
                              f"or use another --out")
        return saved
    if saved is not None:
        raise TinyclError(f"{out} already holds a sweep; use --resume or another --out")
    if spec is None:
        raise TinyclError("a sweep file is needed: --config SWEEP.yaml")
    jsonout.write(out / SPEC, spec)
    return spec


def _row(t: dict, cost: dict, targets: list[str], cons_target: str) -> dict:
    """A trial's row with its costs (metrics filled in when it has run)."""
    c = cost["targets"][cons_target]
    return {"id": t["id"], "status": "planned", "reason": None, "point": t["point"], "config": t["config"],
            "average_accuracy": None, "forgetting": None, "footprint_bytes": None,
            "replay_bytes": cost["replay_bytes"], "strategy_bytes": cost["strategy_bytes"],
            "device_bytes": c["device_bytes"],
            "latency_s": c["latency_s"], "energy_j": c["energy_j"], "fits": c["fits"],
            "targets": {k: {m: cost["targets"][k][m] for m in ("latency_s", "energy_j", "device_bytes", "fits")}
                        for k in targets},
            "seconds": None}


def _finish(row: dict, got: dict) -> dict:
    row = dict(row)
    row["seconds"] = got.get("seconds")
    if got["status"] != "ok":
        row.update(status="failed", reason=got["error"])
        return row
    res = got["results"]
    row.update(status="ok", average_accuracy=res.get("average_accuracy"), forgetting=res.get("forgetting"),
               footprint_bytes=(res.get("footprint_bytes") or {}).get("total"),
               run_seconds=got.get("run_seconds"), stored_replay_bytes=(res.get("replay_memory_bytes") or {})
               .get("total"))
    if res.get("diverged"):
        row["reason"] = f"diverged from experience {res.get('diverged_from_experience')}"
    return row


class Sweep:
    """One sweep in ``out``: see :func:`sweep`."""

    def __init__(self, spec: dict, out: Path, progress: bool, retry_failed: bool = False):
        self.spec, self.out, self.progress = spec, out, progress
        self.retry_failed = retry_failed  # on resume, failed trials run again (e.g. a worker killed for memory)
        self.objectives = S.objectives(spec)
        self.cons = spec["constraints"]
        self.costs = CostModel()
        self.rows: dict[str, dict] = {}
        self.planned = 0
        self.done = 0  # trials announced as finished

    def folder(self, tid: str) -> Path:
        return self.out / "trials" / tid

    def saved_row(self, tid: str) -> dict | None:
        p = self.folder(tid) / "trial.json"
        if not p.exists():
            return None
        try:
            row = json.loads(p.read_text())
        except (OSError, ValueError):
            return None
        done = ("ok", "pruned") if self.retry_failed else ("ok", "failed", "pruned")
        return row if isinstance(row, dict) and row.get("status") in done else None

    def row_for(self, t: dict, strict: bool = True) -> dict:
        """A planned row, or the saved one of a finished trial, or a pruned row (written at once).

        A trial the cost model cannot price raises one line (``strict``) or is a failed row."""
        saved = self.saved_row(t["id"])
        if saved is not None:
            return saved
        try:
            cost = self.costs.trial_cost(t["config"], self.spec["targets"])
        except TinyclError as e:
            if strict:
                raise TinyclError(f"trial {t['id']} ({json.dumps(t['point'])}): {e}") from None
            row = {"id": t["id"], "status": "failed", "reason": f"cost model: {e}", "point": t["point"],
                   "config": t["config"], "targets": {}, "seconds": None,
                   **dict.fromkeys(("average_accuracy", "forgetting", "footprint_bytes", "replay_bytes",
                                    "device_bytes", "latency_s", "energy_j", "fits"))}
            self.record(row)
            return row
        row = _row(t, cost, self.spec["targets"], self.cons["target"])
        why = prune_reason(cost, self.cons)
        if why:
            row.update(status="pruned", reason=why)
            self.record(row)
        return row

    def record(self, row: dict) -> None:
        """Keep a finished row: ``trial.json`` (atomic), then ``trials.json`` and ``trials.csv``."""
        from .output import write_tables
        self.rows[row["id"]] = row
        if row["status"] in ("ok", "failed", "pruned"):
            self.folder(row["id"]).mkdir(parents=True, exist_ok=True)
            jsonout.write(self.folder(row["id"]) / "trial.json", row)
        write_tables(self.out, list(self.rows.values()), self.spec)

    def say(self, row: dict) -> None:
        if not self.progress:
            return
        rows = list(self.rows.values())
        self.done += 1
        done = self.done
        best = recommend(rows, self.objectives)
        m = self.objectives[0][0]
        what = {"ok": f"{m} {row.get(m)}", "failed": f"failed: {row['reason']}",
                "pruned": f"pruned: {row['reason']}"}[row["status"]]
        if row["status"] == "ok" and isinstance(row.get(m), float):
            what = f"{m} {row[m]:.4g}"
        b = f"best {m} {best[m]:.4g} ({best['id']})" if best and isinstance(best.get(m), float) else "best: none yet"
        print(f"sweep: {done}/{self.planned} done | {b} | trial {row['id']} {what}", file=sys.stderr, flush=True)


class Submitter:
    """Submits trials as Ray tasks; the setup of each ``SETUP_KEYS`` value is built once (a Ray task)
    and passed to its trials through the object store (freed when they have all ended)."""

    def __init__(self, ray, sw: Sweep, share: bool):
        self.ray, self.sw = ray, sw
        self.share = share and can_share()
        self.trial = ray.remote(num_cpus=1, max_retries=0)(run_trial)
        self.build = ray.remote(num_cpus=1, max_retries=0)(build_setup)
        self.setups: dict = {}

    def __call__(self, t: dict):
        args = [t["config"], str(self.sw.folder(t["id"]))]
        if self.share:
            k = key_of(t["config"], SETUP_KEYS)
            if k not in self.setups:
                self.setups[k] = self.build.remote(t["config"], str(self.sw.out / "cache"))
            args += [[self.setups[k]], k]  # in a list: the worker fetches it once, not once per trial
        return self.trial.remote(*args)


def run_planned(sw: Sweep, trials: list[dict], ray, share: bool) -> None:
    """Grid and random search: every planned trial not finished or pruned runs on Ray."""
    submit = Submitter(ray, sw, share)
    sw.planned = len(trials)
    todo = []
    for t in trials:
        row = sw.rows.get(t["id"]) or sw.row_for(t)
        sw.rows[t["id"]] = row
        if row["status"] == "planned":
            todo.append(t)
        else:  # pruned now, or finished before --resume
            sw.say(row)
    todo.sort(key=lambda t: key_of(t["config"], SETUP_KEYS))  # trials sharing a setup run together
    pending = {submit(t): t for t in todo}
    submit.setups.clear()  # the pending trials hold the setups; each is freed when its last trial ends
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        t = pending.pop(ready[0])
        got = _get(ray, ready[0])
        row = _finish(sw.rows[t["id"]], got)
        sw.record(row)
        sw.say(row)


def _get(ray, ref) -> dict:
    try:
        return ray.get(ref)
    except Exception as e:  # noqa: BLE001 - a worker that died (killed, out of memory)
        return {"status": "failed", "error": f"Ray: {str(e).strip().splitlines()[0] if str(e) else e!r}"}


def sweep(spec: dict | None, out: str | Path, address: str | None = None, resume: bool = False,
          progress: bool = True, num_cpus: int | None = None, share: bool = True,
          retry_failed: bool = False) -> dict:
    """Run (or resume) a sweep into ``out``; returns ``{"rows", "recommended", "seconds"}``.

    ``spec`` is a checked spec (:func:`tinycl.sweep.spec.read`); None with ``resume`` takes the
    saved one. ``share=False`` runs every trial from scratch (benchmarks of the sharing).
    ``retry_failed`` (with ``resume``): failed trials run again; ok and pruned ones are kept.
    """
    from .output import write_all
    from .search import run_optuna

    out = Path(out).resolve()
    t0 = time.perf_counter()
    costs = CostModel()
    if spec is not None and spec["search"]["kind"] != "optuna":
        for t in S.plan(spec):  # a point the cost model cannot price: one line, before the folder is used
            try:
                costs.trial_cost(t["config"], spec["targets"])
            except TinyclError as e:
                raise TinyclError(f"sweep file: the point {json.dumps(t['point'], sort_keys=True)}: {e}") from None
    with folder_lock(out):
        spec = _open_folder(out, spec, resume)
        sw = Sweep(spec, out, progress, retry_failed and resume)
        sw.costs = costs
        trials = None if spec["search"]["kind"] == "optuna" else S.plan(spec)
        for t in trials or []:  # pruned and finished trials before Ray starts
            sw.rows[t["id"]] = sw.row_for(t)
        if trials is not None and all(r["status"] != "planned" for r in sw.rows.values()):
            sw.planned = len(trials)
            for r in sw.rows.values():
                sw.say(r)
            rec = write_all(out, list(sw.rows.values()), spec)  # nothing to run: no Ray
            return {"rows": list(sw.rows.values()), "recommended": rec, "seconds": time.perf_counter() - t0,
                    "out": str(out), "spec": spec}
        ray, started = _start_ray(address, num_cpus)
        try:
            if trials is None:
                run_optuna(sw, ray, share)
            else:
                run_planned(sw, trials, ray, share)
        finally:
            if started:
                ray.shutdown()
        rows = list(sw.rows.values())
        rec = write_all(out, rows, spec)
    return {"rows": rows, "recommended": rec, "seconds": time.perf_counter() - t0, "out": str(out), "spec": spec}
