"""The sweep file of ``tinycl sweep``: reading, validation and the planned trial configs.

A sweep file is a YAML mapping::

    base: {epochs: 1, n_replays: 200}          # any tinycl run keys (docs/cli.md)
    axes:                                       # lists, or ranges {start, stop, step} (stop included)
      lr_bits: [2, 4, 8]
      n_replays: {start: 100, stop: 300, step: 100}
    search: {kind: grid}                        # grid | random (budget, seed) | optuna (budget, seed)
    constraints: {target: vega, memory_bytes: 524288, latency_s: 0.05, energy_j: 0.01}
    objectives: [max average_accuracy, min device_bytes, min energy_j]
    targets: [vega, stm32l4]                    # latency and energy reported on each

Every key is checked before any work; a bad one raises one line naming it.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import random
from pathlib import Path

import yaml

from ..cl import config as C
from ..errors import TinyclError

TOP_KEYS = ("base", "axes", "search", "constraints", "objectives", "targets")
SEARCH_KINDS = ("grid", "random", "optuna")
CONSTRAINT_KEYS = ("target", "memory_bytes", "replay_bytes", "latency_s", "energy_j", "must_fit")
# metric -> (default goal, meaning); the objectives and constraints refer to these
METRICS = {
    "average_accuracy": "max",   # seen-class accuracy after the last experience (0..1)
    "forgetting": "min",
    "device_bytes": "min",       # memory planner's groups of one learning event + the replay memory (bytes)
    "replay_bytes": "min",       # replay memory of n_replays latents at lr_bits (bytes)
    "footprint_bytes": "min",    # tinycl run's learner footprint (bytes)
    "latency_s": "min",          # per learning event on the constraint target (seconds)
    "energy_j": "min",           # per learning event on the constraint target (joules)
}
DEFAULT_OBJECTIVES = ["max average_accuracy", "min device_bytes", "min energy_j"]
MAX_TRIALS = 10000


def _err(msg: str):
    raise TinyclError(f"sweep file: {msg}")


def _expand_range(key: str, r: dict) -> list:
    if set(r) != {"start", "stop", "step"}:
        _err(f"axis '{key}': a range is {{start, stop, step}}, got keys {sorted(r)}")
    a, b, s = r["start"], r["stop"], r["step"]
    nums = (a, b, s)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in nums):
        _err(f"axis '{key}': range start, stop and step must be finite numbers, got {a!r}, {b!r}, {s!r}")
    if s <= 0 or b < a:
        _err(f"axis '{key}': range needs step > 0 and stop >= start, got {a}..{b} step {s}")
    n = int(math.floor((b - a) / s + 1e-9)) + 1
    if n > MAX_TRIALS:
        _err(f"axis '{key}': range has {n} values (at most {MAX_TRIALS})")
    if all(isinstance(v, int) for v in nums):
        return [a + i * s for i in range(n)]
    return [round(a + i * s, 12) for i in range(n)]


def _axes(raw) -> dict:
    if not isinstance(raw, dict) or not raw:
        _err("'axes' must be a non-empty mapping of config keys to lists or ranges")
    out = {}
    for k, v in raw.items():
        if k not in C.DEFAULTS:
            _err(f"axis '{k}' is not a tinycl run key; allowed: {', '.join(C.DEFAULTS)}")
        if isinstance(v, dict):
            v = _expand_range(k, v)
        if not isinstance(v, list) or not v:
            _err(f"axis '{k}' must be a non-empty list or a range {{start, stop, step}}, got {v!r}")
        keys = [json.dumps(x, sort_keys=True) for x in v]
        if len(set(keys)) != len(keys):
            _err(f"axis '{k}' lists a value twice: {v!r}")
        out[k] = v
    return out


def _search(raw) -> dict:
    raw = {"kind": "grid"} if raw is None else raw
    if not isinstance(raw, dict):
        _err(f"'search' must be a mapping (kind, budget, seed), got {raw!r}")
    bad = sorted(set(raw) - {"kind", "budget", "seed"})
    if bad:
        _err(f"search: unknown key '{bad[0]}'; allowed: kind, budget, seed")
    kind = raw.get("kind", "grid")
    if kind not in SEARCH_KINDS:
        _err(f"search: 'kind' must be one of {', '.join(SEARCH_KINDS)}; got {kind!r}")
    budget, seed = raw.get("budget"), raw.get("seed", 0)
    if budget is None and kind != "grid":
        _err(f"search: kind {kind} needs a 'budget' (the number of trials)")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
        _err(f"search: 'budget' must be an integer >= 1, got {budget!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        _err(f"search: 'seed' must be an integer >= 0, got {seed!r}")
    return {"kind": kind, "budget": budget, "seed": seed}


def _number(key: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        _err(f"constraints: '{key}' must be a finite number > 0, got {v!r}")
    return float(v)


def _constraints(raw, base_target: str) -> dict:
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        _err(f"'constraints' must be a mapping, got {raw!r}")
    bad = sorted(set(raw) - set(CONSTRAINT_KEYS))
    if bad:
        _err(f"constraints: unknown key '{bad[0]}'; allowed: {', '.join(CONSTRAINT_KEYS)}")
    out = {"target": raw.get("target", base_target)}
    if not isinstance(out["target"], str) or not out["target"]:
        _err(f"constraints: 'target' must be a target name or YAML path, got {out['target']!r}")
    for k in ("memory_bytes", "replay_bytes", "latency_s", "energy_j"):
        if raw.get(k) is not None:
            out[k] = _number(k, raw[k])
    fit = raw.get("must_fit", False)
    if not isinstance(fit, bool):
        _err(f"constraints: 'must_fit' must be true or false, got {fit!r}")
    out["must_fit"] = fit
    return out


def _objectives(raw) -> list[tuple[str, str]]:
    raw = DEFAULT_OBJECTIVES if raw is None else raw
    if not isinstance(raw, list) or not raw:
        _err("'objectives' must be a non-empty list like [max average_accuracy, min device_bytes]")
    out = []
    for o in raw:
        parts = o.split() if isinstance(o, str) else []
        if len(parts) != 2 or parts[0] not in ("max", "min") or parts[1] not in METRICS:
            _err(f"objective {o!r} must be 'max METRIC' or 'min METRIC' with METRIC one of {', '.join(METRICS)}")
        out.append((parts[1], parts[0]))
    if len({m for m, _ in out}) != len(out):
        _err(f"an objective is listed twice: {raw!r}")
    return out


def _targets(raw, constraint_target: str) -> list[str]:
    raw = [constraint_target] if raw is None else raw
    if not isinstance(raw, list) or not raw or not all(isinstance(t, str) and t for t in raw):
        _err(f"'targets' must be a non-empty list of target names, got {raw!r}")
    return list(dict.fromkeys([constraint_target] + raw))


def check_targets(names: list[str]) -> None:
    from ..hw.target import load_target
    for t in names:
        try:
            load_target(t)
        except TinyclError as e:
            _err(f"target {t!r}: {e}")


def read(path: str | Path, data: str | None = None) -> dict:
    """The checked sweep spec of a YAML file (``data`` overrides the base config's data)."""
    p = Path(path)
    if not p.is_file():
        raise TinyclError(f"sweep file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise TinyclError(f"sweep file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    return parse(raw, data)


def parse(raw, data: str | None = None) -> dict:
    """Check a sweep mapping; returns the normalised spec (plain JSON values)."""
    if not isinstance(raw, dict):
        _err("it must hold a mapping with keys base, axes, search, constraints, objectives, targets")
    bad = sorted(set(raw) - set(TOP_KEYS))
    if bad:
        _err(f"unknown key '{bad[0]}'; allowed: {', '.join(TOP_KEYS)}")
    base = raw.get("base") or {}
    if not isinstance(base, dict):
        _err(f"'base' must be a mapping of tinycl run keys, got {base!r}")
    base = dict(base)
    if data:
        base["data"] = data
    try:
        C.validate(base)
    except TinyclError as e:
        _err(f"base: {e}")
    axes = _axes(raw.get("axes"))
    search = _search(raw.get("search"))
    cons = _constraints(raw.get("constraints"), base.get("target", C.DEFAULTS["target"]))
    spec = {"base": base, "axes": axes, "search": search, "constraints": cons,
            "objectives": [f"{g} {m}" for m, g in _objectives(raw.get("objectives"))],
            "targets": _targets(raw.get("targets"), cons["target"])}
    check_targets(spec["targets"] + ([base["target"]] if "target" in base else []))
    if "target" in axes:
        check_targets([t for t in axes["target"] if isinstance(t, str)])
    spec = json.loads(json.dumps(spec))
    plan(spec)  # the grid's size against the budget
    check_all(spec)  # every point's run config, before any work
    return spec


def objectives(spec: dict) -> list[tuple[str, str]]:
    """[(metric, 'max' | 'min'), ...] of a parsed spec."""
    return _objectives(spec["objectives"])


def trial_id(cfg: dict) -> str:
    """A trial's name: the first 12 hex digits of the SHA-256 of its validated config."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]


def _config(spec: dict, point: dict) -> dict:
    cfg = copy.deepcopy(spec["base"])
    cfg.update(copy.deepcopy(point))
    try:
        return C.validate(cfg)
    except TinyclError as e:
        _err(f"the point {json.dumps(point, sort_keys=True)} gives a bad run config: {e}")


def grid_points(spec: dict) -> list[dict]:
    keys = list(spec["axes"])
    return [dict(zip(keys, vals)) for vals in itertools.product(*(spec["axes"][k] for k in keys))]


def plan(spec: dict) -> list[dict]:
    """The planned trials of a grid or random search: [{"id", "point", "config"}], in order.

    Random search draws ``budget`` distinct grid points with the search seed, so a resumed
    sweep plans the same trials. (Optuna plans as it goes: see :mod:`tinycl.sweep.search`.)
    """
    size = math.prod(len(v) for v in spec["axes"].values())
    if size > MAX_TRIALS:
        _err(f"the grid has {size} points (at most {MAX_TRIALS}); use search kind random with a budget")
    points = grid_points(spec)
    s = spec["search"]
    if s["kind"] == "grid" and s["budget"] is not None and s["budget"] < len(points):
        _err(f"the grid has {len(points)} points, over the budget of {s['budget']}; raise it or use random")
    if s["kind"] == "random":
        points = random.Random(s["seed"]).sample(points, min(s["budget"], len(points)))
    return [trial(spec, p) for p in points]


def trial(spec: dict, point: dict) -> dict:
    cfg = _config(spec, point)
    return {"id": trial_id(cfg), "point": point, "config": cfg}


def check_all(spec: dict) -> None:
    """Validate every grid point's run config (optuna may pick any of them)."""
    for p in grid_points(spec):
        _config(spec, p)
