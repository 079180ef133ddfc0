"""``tinycl run``: a class-incremental experiment, resumable: a loop over a strategy with plugins.

The strategy (:mod:`tinycl.cl.strategies`, config ``strategy``) trains each experience; the
plugins (:mod:`tinycl.cl.plugins`) do CWR*, metrics, the log, checkpoints, progress and the
cost annotation around it (docs/strategies.md).

The validated config is written to ``OUT/config.json`` before any work, and after every
experience the whole learner state is written atomically to ``OUT/state.ckpt``;
``resume=True`` continues from it (or from ``state.ckpt.prev`` when it is damaged, or from
the start when the run was killed before its first checkpoint) and finishes with the same
results as an uninterrupted run (same config, same machine and thread count). The folder
is locked for the whole run (:func:`tinycl.cl.checkpoint.folder_lock`).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import TinyclError
from ..graph.counts import total_macs
from ..numerics.precision import get_precision
from ..report import jsonout
from . import checkpoint
from . import plugins as P
from .config import validate
from .footprint import footprint
from .learner import Learner
from .metrics import AccuracyMatrix, bwt, forgetting
from .setup import build
from .strategies import strategy_class

STATE = "state.ckpt"
CONFIG = "config.json"
STATE_FORMAT = "tinycl.state/1"
_STATE_KEYS = ("config", "next", "learner", "memory", "cwr", "generator", "acc_correct", "acc_total", "log")
SCHEMA = "tinycl.results/1"


def _check_state(state, path: Path) -> dict:
    """``state`` if it is a run state; a file of another kind (a backbone, ...) raises one line."""
    if not isinstance(state, dict) or any(k not in state for k in _STATE_KEYS):
        kind = state.get("format") if isinstance(state, dict) else None
        what = f"a {kind} file" if isinstance(kind, str) else "another kind of tinycl file"
        raise TinyclError(f"{path} is {what}, not the state of a tinycl run")
    if not isinstance(state["config"], dict):
        raise TinyclError(f"{path} holds no run config")
    validate(state["config"])  # a bad saved config: one line now, not a traceback later
    return state


def _read_state(path: Path) -> dict:
    return _check_state(checkpoint.load(path), path)


def _read_config(out: Path) -> dict:
    try:
        cfg = json.loads((out / CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise TinyclError(f"{out / CONFIG} cannot be read: {e}".splitlines()[0]) from None
    if not isinstance(cfg, dict):
        raise TinyclError(f"{out / CONFIG} does not hold a config (a JSON object)")
    return validate(cfg)


def saved_config(out: str | Path) -> dict | None:
    """The config of the run in ``out`` (read only, no side effects), or None when there is none."""
    out = Path(out)
    for read, path in ((_read_config, out), (_read_state, out / STATE), (_read_state, out / (STATE + ".prev"))):
        try:
            got = read(path)
        except TinyclError:
            continue
        return got if read is _read_config else got["config"]
    return None


def load_state(out: Path) -> tuple[dict | None, str | None]:
    """The state to resume from and a one-line note, or None to start again from ``config.json``.

    ``state.ckpt`` first; when it is missing or cannot be used, ``state.ckpt.prev`` (the damaged
    file is kept as ``state.ckpt.damaged``); with neither, a run killed before its first
    checkpoint starts again from its saved config. Anything else raises one line.
    """
    main, prev = out / STATE, out / (STATE + ".prev")
    if main.exists():
        try:
            return _read_state(main), None
        except TinyclError as e:
            why = str(e)
        if not prev.exists():
            raise TinyclError(f"{why}; there is no {prev.name} beside it to resume from") from None
        try:
            state = _read_state(prev)
        except TinyclError as e2:
            raise TinyclError(f"{why}; {prev.name} cannot be used either ({e2})") from None
        main.replace(out / (STATE + ".damaged"))
        return state, (f"{why}; resuming from {prev.name} (after experience {state['next']}), "
                       f"the damaged file is kept as {STATE}.damaged")
    if prev.exists():
        return _read_state(prev), f"{main} is missing; resuming from {prev.name}"
    if (out / CONFIG).exists():
        return None, f"no checkpoint in {out} yet; starting the run again from its saved {CONFIG}"
    raise TinyclError(f"no run to resume in {out}: checkpoint not found ({STATE} or {CONFIG})")


def _start(cfg: dict, out: Path, resume: bool) -> tuple[dict, dict | None]:
    """The config and the state to continue from (None: from the start); writes ``config.json``."""
    if resume:
        state, note = load_state(out)
        cfg = state["config"] if state is not None else _read_config(out)
        if note:
            print(f"tinycl: {note}", file=sys.stderr)
        return cfg, state
    if (out / STATE).exists():
        raise TinyclError(f"{out} already holds a run; use --resume {out} or another --out")
    if (out / CONFIG).exists() and _read_config(out) != json.loads(jsonout.dumps(cfg)):
        raise TinyclError(f"{out} holds a run started with another config; use --resume {out} or another --out")
    jsonout.write(out / CONFIG, cfg)  # before any work: a run killed at any moment can be resumed
    return cfg, None


def run(cfg: dict, out_dir: str | Path, resume: bool = False, progress: bool = True,
        stop_after: int | None = None, annotate=None, setup=None) -> dict:
    """Run (or resume) an experiment; writes ``out_dir/results.json`` and returns the results.

    ``annotate(setup, cfg) -> dict`` (optional) adds the modelled cost of one learning
    event on the configured target (the CLI passes the ``tinycl.hw`` cost model).
    ``stop_after`` ends the run after that many experiences (tests of resume).
    ``setup`` reuses a :class:`tinycl.cl.setup.Setup` built for the same data, backbone,
    latent layer and front (benchmarks that compare strategies on one front).
    A run whose training loss stops being finite finishes and is marked ``diverged``.
    """
    out = Path(out_dir)
    if resume and not out.is_dir():
        raise TinyclError(f"no run to resume in {out}: no such folder")
    if not resume:
        cfg = validate(cfg)
        get_precision(cfg["precision"])
    with checkpoint.folder_lock(out):
        cfg, state = _start(cfg, out, resume)
        return _run(cfg, out, state, progress, stop_after, annotate, setup)


class Run:
    """What the strategy and the plugins see of a run: config, setup, learner, generator, results so far."""

    def __init__(self, cfg: dict, setup, out: Path):
        self.cfg, self.setup, self.out, self.stream = cfg, setup, out, setup.stream
        self.gen = torch.Generator().manual_seed(cfg["seed"])
        self.learner = Learner(setup.back, setup.latent_shape, cfg["precision"], cfg["learning_rate"],
                               cfg["momentum"], cfg["weight_decay"], self.gen)
        self.back_macs = total_macs(setup.back)  # what the learner computes: no input gradient of the back's first layer
        self.front_macs = total_macs(setup.graph)["forward"] - self.back_macs["forward"]
        self.acc = AccuracyMatrix(len(self.stream))
        self.log: list[dict] = []
        self.diverged_from: int | None = None
        self.i = self.idx = self.x_new = self.y_new = None
        self.strategy = strategy_class(cfg["strategy"])(self)
        self.strategy.start(setup.train_latents[self.stream[0].train_idx])
        self.plugins: list = []

    def plugin_state(self, key: str):
        """The state of the plugin saved under ``key``, or None when the run has none."""
        for p in self.plugins:
            if p.key == key:
                return p.state_dict()
        return None

    def load(self, state: dict) -> int:
        """Continue from a saved state; returns the next experience."""
        self.learner.load_state_dict(state["learner"])
        if self.strategy.memory is not None:
            self.strategy.memory.load_state_dict(state["memory"])
        self.strategy.load_state_dict(state.get("strategy") or {})
        for p in self.plugins:
            if p.key is not None:
                p.load_state_dict(state[p.key])
        self.gen.set_state(state["generator"])
        self.acc.correct, self.acc.total = _counts(state["acc_correct"]), _counts(state["acc_total"])
        self.log, self.diverged_from = state["log"], state.get("diverged_from")
        return state["next"]


def _plugins(run: Run, out: Path, start: int, progress: bool, annotate) -> list:
    """The run's plugins in hook order: CWR* merges before the metrics test, the checkpoint comes last."""
    cwr = [P.CWR(run.learner.net)] if run.cfg["cwr"] else []
    return [P.Divergence(), *cwr, P.Metrics(), P.Log(), P.Checkpoint(out / STATE, STATE_FORMAT),
            P.Progress(len(run.stream), start, progress), P.Cost(annotate)]


def _run(cfg, out, state, progress, stop_after, annotate, setup) -> dict:
    t0 = time.perf_counter()
    setup = setup if setup is not None else build(cfg, out, progress)
    t_setup = time.perf_counter() - t0
    run = Run(cfg, setup, out)
    start = state["next"] if state is not None else 0
    run.plugins = _plugins(run, out, start, progress, annotate)
    if state is not None:
        run.load(state)
    bar = next(p for p in run.plugins if isinstance(p, P.Progress))
    strategy, T = run.strategy, len(run.stream)
    for i in range(start, T):
        run.i = i
        run.idx, run.x_new, run.y_new = strategy.new_data(i)
        for p in run.plugins:
            p.before_experience(run)
        strategy.train(run.x_new, run.y_new)
        for p in run.plugins:
            p.after_training(run)
        strategy.after_training(run.x_new, run.y_new)
        for p in run.plugins:
            p.after_experience(run)
        if stop_after is not None and i + 1 >= stop_after and i + 1 < T:
            bar.close()
            return {"stopped_after": i + 1}
    bar.close()
    results = _results(cfg, setup, run, t_setup, time.perf_counter() - t0)
    for p in run.plugins:
        p.after_run(run, results)
    results["diverged"] = run.diverged_from is not None
    results["diverged_from_experience"] = run.diverged_from
    replaced: list[str] = []
    results = jsonout.clean(results, "", replaced)  # returned as written: strict, NaN as null
    results["non_finite"] = replaced
    write_json(out / "results.json", results)
    return results


def _counts(saved) -> np.ndarray:
    """Accuracy counts as saved (a tensor)."""
    return np.array(saved.numpy() if isinstance(saved, torch.Tensor) else saved, dtype=np.int64)


def _results(cfg, setup, run: Run, t_setup, t_total) -> dict:
    acc, log, strategy = run.acc, run.log, run.strategy
    memory = strategy.memory
    r = acc.matrix
    seen = acc.seen_accuracy()
    per_exp, mean_forgetting = forgetting(r)
    mem_bytes = strategy.memory_bytes()
    return {
        "schema": SCHEMA,
        "config": cfg,
        "backbone": setup.backbone_source,
        "class_order": setup.class_order,
        "experiences": [{"id": e.id, "classes": e.classes, "train": len(e.train_idx), "test": len(e.test_idx)}
                        for e in setup.stream],
        "accuracy_matrix": _nan_to_none(r.tolist()),
        "seen_accuracy": _nan_to_none(seen.tolist()),
        "average_accuracy": float(seen[-1]),
        "forgetting": None if math.isnan(mean_forgetting) else float(mean_forgetting),
        "forgetting_per_experience": _nan_to_none(per_exp.tolist()),
        "bwt": _none_if_nan(bwt(r)),
        "replay_memory_bytes": mem_bytes,
        "replay_capacity": memory.capacity if memory is not None else 0,
        "latent_shape": list(setup.latent_shape),
        "lr_bits": cfg["lr_bits"],
        "n_replays": cfg["n_replays"],
        "strategy": cfg["strategy"],
        "precision": cfg["precision"],
        "footprint_bytes": strategy.footprint(footprint(setup, run.learner, strategy, cfg)),
        "per_experience": log,
        "timing": {"setup_s": t_setup, "total_s": t_total, "per_experience_s": [e["seconds"] for e in log]},
    }


def _none_if_nan(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _nan_to_none(x):
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return _none_if_nan(x)


def write_json(path: Path, obj: dict) -> None:
    """Write strict JSON atomically (temporary file + rename; non-finite values as null, flagged)."""
    jsonout.write(path, obj)
