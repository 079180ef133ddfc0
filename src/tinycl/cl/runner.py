"""``tinycl run``: a class-incremental experiment with (quantized) latent replay, resumable.

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
from tqdm import tqdm

from ..errors import TinyclError
from ..graph.counts import total_macs
from ..numerics.latent_quant import LatentQuantizer
from ..numerics.precision import get_precision
from ..report import jsonout
from . import checkpoint
from .backbone import to_input
from .config import validate
from .cwr import CWRStar
from .footprint import footprint, replay_budget_bytes
from .learner import Learner
from .memory import ReplayMemory
from .metrics import AccuracyMatrix, bwt, forgetting
from .setup import build

STATE = "state.ckpt"
CONFIG = "config.json"
STATE_FORMAT = "tinycl.state/1"
_STATE_KEYS = ("config", "next", "learner", "memory", "cwr", "generator", "acc_correct", "acc_total", "log")
SCHEMA = "tinycl.results/1"


def _memory(cfg, setup, first_latents) -> ReplayMemory | None:
    """The replay memory of the strategy: latents at lr_bits, or raw uint8 inputs at equal bytes.

    The latent quantizer is calibrated on the first experience's latents (at deployment).
    """
    if cfg["strategy"] not in ("latent_replay", "raw_replay"):
        return None
    q = LatentQuantizer(cfg["lr_bits"], cfg["lr_granularity"], cfg["lr_clipping"], seed=cfg["seed"])
    q.fit(first_latents[:2048])
    if cfg["strategy"] == "latent_replay":
        return ReplayMemory(cfg["n_replays"], q, cfg["replacement"], seed=cfg["seed"])
    budget = replay_budget_bytes(cfg["n_replays"], setup.latent_shape, q)
    raw_q = LatentQuantizer(8, "tensor", "minmax", seed=cfg["seed"])  # 0..255 -> codes 0..255: lossless
    raw_q.fit(torch.tensor([0.0, 255.0]).view(2, 1, 1, 1).expand(2, *setup.dataset.image_shape))
    per_sample = replay_budget_bytes(1, setup.dataset.image_shape, raw_q) - raw_q.metadata_nbytes()
    capacity = max(1, (budget - raw_q.metadata_nbytes()) // per_sample)
    return ReplayMemory(int(capacity), raw_q, cfg["replacement"], seed=cfg["seed"])


def _through(q: LatentQuantizer, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """``x`` quantized and dequantized by the replay quantizer: new latents on the replayed ones' grid.

    With ``lr_quantize_new`` the back trains only on latents as the memory returns them, so it
    cannot learn to tell replayed (old-class) samples from new ones by their quantization noise.
    Evaluation still sees the front's latents as they are.
    """
    return torch.cat([q.decode(q.encode(x[i:i + chunk])) for i in range(0, len(x), chunk)]) if len(x) else x


def _accuracy(learner, lat, y) -> tuple[int, int]:
    if len(y) == 0:
        return 0, 0
    return int((learner.predict(lat) == y).sum()), len(y)


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


def _run(cfg, out, state, progress, stop_after, annotate, setup) -> dict:
    t0 = time.perf_counter()
    setup = setup if setup is not None else build(cfg, out, progress)
    t_setup = time.perf_counter() - t0
    ds, stream = setup.dataset, setup.stream
    gen = torch.Generator().manual_seed(cfg["seed"])
    learner = Learner(setup.back, setup.latent_shape, cfg["precision"], cfg["learning_rate"], cfg["momentum"],
                      cfg["weight_decay"], gen)
    memory = _memory(cfg, setup, setup.train_latents[stream[0].train_idx])
    cwr = CWRStar(learner.net) if cfg["cwr"] else None
    T = len(stream)
    acc = AccuracyMatrix(T)
    log: list[dict] = []
    start, diverged_from = 0, None
    if state is not None:
        learner.load_state_dict(state["learner"])
        if memory is not None:
            memory.load_state_dict(state["memory"])
        if cwr is not None:
            cwr.load_state_dict(state["cwr"])
        gen.set_state(state["generator"])
        acc.correct, acc.total = _counts(state["acc_correct"]), _counts(state["acc_total"])
        log, start, diverged_from = state["log"], state["next"], state.get("diverged_from")

    back_macs = total_macs(setup.back)   # what the learner computes: no input gradient of the back's first layer
    front_macs = total_macs(setup.graph)["forward"] - back_macs["forward"]
    test_y = ds.test.y
    bar = tqdm(total=T, initial=start, desc="experiences", unit="exp", disable=None if progress else True)
    for i in range(start, T):
        t_exp = time.perf_counter()
        e = stream[i]
        if cfg["strategy"] == "joint":
            idx = torch.cat([s.train_idx for s in stream[:i + 1]])
        else:
            idx = e.train_idx
        x_new, y_new = setup.train_latents[idx], ds.train.y[idx]
        if cfg["lr_quantize_new"]:
            x_new = _through(memory.quantizer, x_new)
        replay_fn = None
        if memory is not None and len(memory):
            if cfg["strategy"] == "latent_replay":
                replay_fn = lambda n: memory.sample(n, gen)  # noqa: E731
            else:
                def replay_fn(n):
                    raw, ry = memory.sample(n, gen)
                    return setup.front(to_input(raw.round().clamp(0, 255).to(torch.uint8), setup.mean,
                                                setup.std)), ry
        before, nonfinite = learner.samples_trained, learner.nonfinite_steps
        if cwr is not None:
            cwr.before_experience(y_new)
        learner.train_experience(x_new, y_new, cfg["epochs"], cfg["batch_size"], replay_fn,
                                 cfg["replay_batch"], progress, desc=f"exp {i}")
        if learner.nonfinite_steps > nonfinite and diverged_from is None:
            diverged_from = i
        if cwr is not None:
            cwr.after_experience()
        if memory is not None:
            if cfg["strategy"] == "latent_replay":
                memory.add(x_new, y_new, i)
            else:
                memory.add(ds.train.x[idx].float(), y_new, i)
        for j in range(i + 1):
            c, t = _accuracy(learner, setup.test_latents[stream[j].test_idx], test_y[stream[j].test_idx])
            acc.record(i, j, c, t)
        trained = learner.samples_trained - before
        macs = trained * (back_macs["forward"] + back_macs["backward_input"] + back_macs["backward_weight"]) \
            + len(idx) * front_macs
        log.append({"experience": i, "seconds": time.perf_counter() - t_exp, "train_samples": trained,
                    "train_macs": int(macs),
                    "replay_memory_bytes": memory.nbytes()["total"] if memory is not None else 0,
                    "seen_accuracy": float(acc.seen_accuracy()[i])})
        checkpoint.save(out / STATE, {"format": STATE_FORMAT, "config": cfg, "next": i + 1,
                                      "learner": learner.state_dict(),
                                      "memory": memory.state_dict() if memory is not None else None,
                                      "cwr": cwr.state_dict() if cwr is not None else None,
                                      "generator": gen.get_state(), "acc_correct": torch.from_numpy(acc.correct),
                                      "acc_total": torch.from_numpy(acc.total), "log": log,
                                      "diverged_from": diverged_from})
        bar.update(1)
        bar.set_postfix(acc=f"{acc.seen_accuracy()[i]:.3f}")
        if stop_after is not None and i + 1 >= stop_after and i + 1 < T:
            bar.close()
            return {"stopped_after": i + 1}
    bar.close()
    results = _results(cfg, setup, acc, log, memory, learner, t_setup, time.perf_counter() - t0)
    results["learning_event"] = annotate(setup, cfg) if annotate is not None else None
    results["diverged"] = diverged_from is not None
    results["diverged_from_experience"] = diverged_from
    replaced: list[str] = []
    results = jsonout.clean(results, "", replaced)  # returned as written: strict, NaN as null
    results["non_finite"] = replaced
    write_json(out / "results.json", results)
    return results


def _counts(saved) -> np.ndarray:
    """Accuracy counts as saved (a tensor)."""
    return np.array(saved.numpy() if isinstance(saved, torch.Tensor) else saved, dtype=np.int64)


def _results(cfg, setup, acc, log, memory, learner, t_setup, t_total) -> dict:
    r = acc.matrix
    seen = acc.seen_accuracy()
    per_exp, mean_forgetting = forgetting(r)
    mem_bytes = memory.nbytes() if memory is not None else {"payload": 0, "labels": 0, "experiences": 0,
                                                            "metadata": 0, "total": 0}
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
        "footprint_bytes": footprint(setup, learner, memory, cfg),
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
