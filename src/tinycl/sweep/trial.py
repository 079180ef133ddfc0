"""One trial, as it runs in a Ray worker: a real ``tinycl.cl.runner.run`` in the trial's folder.

Shared work: the backbone and the INT8 latents (:class:`tinycl.cl.setup.Setup`) depend only on
``SETUP_KEYS`` of the config. The driver builds each once in a Ray task and hands the result to
every trial of that key through Ray's object store; a factory-phase backbone is trained once per
``BACKBONE_KEYS`` into the sweep's content-addressed cache folder (``DIR/cache/backbone-<sha>``).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import time
from pathlib import Path

from ..errors import TinyclError

BACKBONE_KEYS = ("data", "model", "backbone", "seed", "initial_classes", "pretrain_epochs", "class_order")
SETUP_KEYS = BACKBONE_KEYS + ("classes_per_experience", "latent_layer", "front_int8")


def key_of(cfg: dict, keys) -> str:
    """SHA-256 (first 16 hex digits) of the config values that determine a shared piece of work."""
    return hashlib.sha256(json.dumps({k: cfg[k] for k in keys}, sort_keys=True).encode()).hexdigest()[:16]


def can_share() -> bool:
    """Whether ``run`` takes a prebuilt setup (else every trial builds its own)."""
    from ..cl.runner import run
    return "setup" in inspect.signature(run).parameters


def build_setup(cfg: dict, cache: str):
    """The setup of ``cfg`` (backbone, split, INT8 front, latents of the whole data set), or the
    one-line error that building it raised. A factory backbone is trained once per sweep into
    ``cache/backbone-<sha of BACKBONE_KEYS>`` under a file lock; other builds load it."""
    import fcntl

    import torch

    from ..cl.setup import build

    try:
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        folder = Path(cache) / f"backbone-{key_of(cfg, BACKBONE_KEYS)}"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # waits: one build trains a factory backbone, the others load it
            return build(dict(cfg), folder, progress=False)
    except Exception as e:  # noqa: BLE001 - every trial of this setup reports it
        return _one_line(e)


_HELD: dict = {}  # setup key -> Setup fetched by this worker process (the last one only)


def _resolve(setup, key: str | None):
    """A setup passed as ``[ObjectRef]`` (not resolved by Ray) is fetched from the object store once
    per worker process and kept for the next trials of the same key (trials arrive grouped by key)."""
    if not isinstance(setup, list):
        return setup
    if key in _HELD:
        return _HELD[key]
    import ray
    _HELD.clear()  # free the previous one first: full CIFAR-10 latents are GBs
    got = ray.get(setup[0])
    if not isinstance(got, str):
        _HELD[key] = got
    return got


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    msg = text[0] if text else ""
    return msg if isinstance(e, TinyclError) else f"{type(e).__name__}: {msg}".rstrip(": ")


def _run_waiting(run, cfg: dict, out: Path, kw: dict, wait_s: float = 60.0) -> dict:
    """``run`` in ``out``, resumed when an earlier attempt left a run there; while the worker of a
    killed sweep still holds the trial folder's lock, wait for it (up to ``wait_s`` seconds)."""
    t_end = time.monotonic() + wait_s
    while True:
        try:
            return run(cfg, out, resume=(out / "config.json").exists(), progress=False, **kw)
        except TinyclError as e:
            if "in use by another tinycl run" not in str(e) or time.monotonic() > t_end:
                raise
        time.sleep(1.0)


def run_trial(cfg: dict, folder: str, setup=None, key: str | None = None) -> dict:
    """Run one trial's config in ``folder`` (resumed when an earlier attempt left a run there),
    on the shared ``setup`` when one is given: a Setup, ``[ObjectRef]`` of one (fetched once per
    worker for its ``key``), or a string, the error that building it raised.

    Returns ``{"status": "ok", "results": {...}, "seconds"}`` or ``{"status": "failed", "error"}``;
    never raises (a failed trial does not stop the sweep).
    """
    import torch

    from ..cl.runner import run

    t0 = time.perf_counter()
    try:
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        out = Path(folder)
        done = out / "results.json"
        if done.exists():
            try:
                res = json.loads(done.read_text())
                return {"status": "ok", "results": res, "seconds": time.perf_counter() - t0, "reused": True}
            except (OSError, ValueError):
                pass
        setup = _resolve(setup, key)
        if isinstance(setup, str):
            raise TinyclError(setup)
        kw = {"setup": setup} if setup is not None else {}
        t_run = time.perf_counter()
        res = _run_waiting(run, cfg, out, kw)
        return {"status": "ok", "results": res, "seconds": time.perf_counter() - t0,
                "run_seconds": time.perf_counter() - t_run, "shared_setup": bool(kw)}
    except Exception as e:  # noqa: BLE001 - reported as the trial's error, the sweep goes on
        return {"status": "failed", "error": _one_line(e), "seconds": time.perf_counter() - t0}
