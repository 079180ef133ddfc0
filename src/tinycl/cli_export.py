"""``tinycl export``: the C project of a finished run's learner (glue between cl/ and export/).

The run folder gives the config (``config.json``), the backbone and the final state (``state.ckpt``):
the INT8 front is rebuilt exactly as the run built it (same calibration), the back's weights and
momenta and the replay memory (codes, labels, replacement state) come from the checkpoint, so the
device starts where the emulation stopped (with ``precision=fp16``: FP16 tensors, the float32
master weights and the loss scaler's state). From there the device draws replays with PCG32
(``numerics/rng.py``), seeded by ``--seed``.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import TinyclError


def export_run(run_dir: str, out: str, max_new: int = 8, replay_batch: int = 8, seed: int = 0) -> dict:
    """Write the C project of the learner of ``run_dir`` into ``out``; returns a summary."""
    from .export.generate import generate
    from .export.planner import arena_bytes
    plan, _ = plan_from_run(run_dir, max_new, replay_batch, seed)
    project = generate(plan, out)
    return {"out": str(project), "precision": plan.precision, "arena_bytes": arena_bytes(plan),
            "front_ops": len(plan.front),
            "back_ops": len(plan.back), "replay_capacity": plan.capacity, "latent_bits": plan.bits,
            "classes": plan.classes}


def plan_from_run(run_dir: str, max_new: int = 8, replay_batch: int = 8, seed: int = 0):
    """(export plan, rebuilt setup) of the learner of a finished run folder."""
    from .cl import checkpoint
    from .cl.config import validate
    from .cl.learner import Learner
    from .cl.memory import ReplayMemory
    from .cl.setup import build
    from .export.plan import build_plan
    from .numerics.latent_quant import LatentQuantizer
    from .numerics.rng import Pcg32

    run = Path(run_dir)
    if not (run / "config.json").is_file() or not (run / "state.ckpt").is_file():
        raise TinyclError(f"{run_dir} is not a finished tinycl run folder (needs config.json and state.ckpt)")
    if max_new < 1 or replay_batch < 0:
        raise TinyclError(f"--max-new must be >= 1 and --replay-batch >= 0, got {max_new} and {replay_batch}")
    try:
        cfg = validate(json.loads((run / "config.json").read_text()))
    except ValueError as e:
        raise TinyclError(f"{run / 'config.json'} is damaged: {e}") from None
    for key, want in (("strategy", "latent_replay"), ("front_int8", True), ("cwr", False)):
        if cfg[key] != want:
            raise TinyclError(f"C export: {key}={cfg[key]!r} is not supported (needs {key}={want!r})")
    if cfg["precision"] not in ("fp32", "fp16"):
        raise TinyclError(f"C export: precision={cfg['precision']!r} is not supported (fp32 or fp16)")
    state = checkpoint.load(run / "state.ckpt")
    if not isinstance(state, dict) or "learner" not in state or "memory" not in state:
        raise TinyclError(f"{run / 'state.ckpt'} is not the state of a tinycl run")
    setup = build(cfg, run, progress=False, latents=False)
    learner = Learner(setup.back, setup.latent_shape, cfg["precision"], cfg["learning_rate"], cfg["momentum"],
                      cfg["weight_decay"], None)
    learner.load_state_dict(state["learner"])
    memory = ReplayMemory(1, LatentQuantizer("fp32"))
    memory.load_state_dict(state["memory"])
    plan = build_plan(setup.front, setup.dataset.image_shape, learner.net, setup.dataset.num_classes, memory,
                      learner.opt, Pcg32(seed), max_new=max_new, replay_batch=replay_batch,
                      quantize_new=cfg["lr_quantize_new"])
    return plan, setup
