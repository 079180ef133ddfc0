"""Adaptive search: Optuna (TPE, seeded) through Ray Tune's ``OptunaSearch``, asked and told here.

The searcher proposes grid points (one categorical choice per axis) on the first objective;
each proposal runs as a Ray task like any other trial. A proposal already finished (in this
run or before ``--resume``) is told its saved result and not rerun; a pruned or failed one is
told as an error (so is a point the cost model cannot price: that trial is reported as failed).
A resumed sweep tells the searcher every finished trial first. The sweep plans ``budget``
distinct trials (fewer when the grid is smaller or the searcher keeps proposing finished points).
"""

from __future__ import annotations

from ..errors import TinyclError
from . import spec as S
from .execute import Submitter, Sweep, _finish, _get

_TRIES = 20  # proposals per budgeted trial before the searcher is taken to have run out of new points


def _searcher(spec: dict, metric: str, mode: str):
    try:
        import optuna
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        raise TinyclError("search kind optuna needs the optuna package: pip install 'tinycl[sweep]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {k: optuna.distributions.CategoricalDistribution(list(range(len(v))))
             for k, v in spec["axes"].items()}
    sampler = optuna.samplers.TPESampler(seed=spec["search"]["seed"])
    return OptunaSearch(space=space, metric=metric, mode=mode, sampler=sampler)


def _saved(sw: Sweep) -> list[dict]:
    folder = sw.out / "trials"
    rows = [sw.saved_row(p.name) for p in sorted(folder.iterdir())] if folder.is_dir() else []
    return [r for r in rows if r is not None]


def run_optuna(sw: Sweep, ray, share: bool) -> None:
    spec = sw.spec
    metric, mode = sw.objectives[0]
    searcher = _searcher(spec, metric, mode)
    submit = Submitter(ray, sw, share)
    budget = spec["search"]["budget"]
    size = len(S.grid_points(spec))
    sw.planned = min(budget, size)
    slots = max(1, int(ray.available_resources().get("CPU", 1)))
    seen: set[str] = set()
    pending: dict = {}
    asks = 0

    def tell(tag: str, row: dict) -> None:
        if row["status"] == "ok" and row.get(metric) is not None:
            searcher.on_trial_complete(tag, result={metric: row[metric]})
        else:
            searcher.on_trial_complete(tag, error=True)

    for row in _saved(sw):  # a resumed sweep: the searcher learns what already ran, nothing reruns
        seen.add(row["id"])
        sw.rows[row["id"]] = row
        try:
            idx = {k: spec["axes"][k].index(row["point"][k]) for k in spec["axes"]}
        except (KeyError, ValueError):
            continue
        ok = row["status"] == "ok" and row.get(metric) is not None
        searcher.add_evaluated_point(idx, row[metric] if ok else 0.0, error=not ok)

    while True:
        while len(pending) < slots and len(seen) < sw.planned and asks < _TRIES * budget:
            asks += 1
            tag = f"ask{asks}"
            got = searcher.suggest(tag)
            if got is None:
                break
            point = {k: spec["axes"][k][got[k]] for k in spec["axes"]}
            t = S.trial(spec, point)
            row = sw.rows.get(t["id"]) or sw.row_for(t, strict=False)
            if t["id"] in seen or row["status"] != "planned":
                if t["id"] not in seen:
                    seen.add(t["id"])
                    sw.rows[t["id"]] = row
                    sw.say(row)
                tell(tag, row)
                continue
            seen.add(t["id"])
            sw.rows[t["id"]] = row
            pending[submit(t)] = (tag, t)
        if not pending:
            break
        ready, _ = ray.wait(list(pending), num_returns=1)
        tag, t = pending.pop(ready[0])
        row = _finish(sw.rows[t["id"]], _get(ray, ready[0]))
        sw.record(row)
        sw.say(row)
        tell(tag, row)
    sw.planned = len(seen)
