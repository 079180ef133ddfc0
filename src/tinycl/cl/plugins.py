"""Plugins: what a run does around its strategy, hooked before and after each experience and step.

Hooks (all optional; ``run`` is the :class:`tinycl.cl.runner.Run`): ``before_experience(run)``,
``before_step(learner, n_steps)``, ``after_step(learner, loss)``, ``after_training(run)``,
``after_experience(run)``, ``after_run(run, results)``. A plugin with state gives
``key`` (its entry in the checkpoint), ``state_dict()`` and ``load_state_dict(sd)``.
"""

from __future__ import annotations

import time

import torch
from tqdm import tqdm

from . import checkpoint
from .cwr import CWRStar


class Plugin:
    key: str | None = None

    def before_experience(self, run) -> None:
        pass

    def before_step(self, learner, n_steps: int) -> None:
        pass

    def after_step(self, learner, loss: float) -> None:
        pass

    def after_training(self, run) -> None:
        pass

    def after_experience(self, run) -> None:
        pass

    def after_run(self, run, results: dict) -> None:
        pass


class Divergence(Plugin):
    """Marks the first experience whose training loss was not finite (``run.diverged_from``)."""

    def before_experience(self, run) -> None:
        self.nonfinite = run.learner.nonfinite_steps

    def after_training(self, run) -> None:
        if run.learner.nonfinite_steps > self.nonfinite and run.diverged_from is None:
            run.diverged_from = run.i


class CWR(Plugin):
    """CWR* (:mod:`tinycl.cl.cwr`): consolidated output rows, loaded before and merged after training."""

    key = "cwr"

    def __init__(self, net):
        self.cwr = CWRStar(net)

    def before_experience(self, run) -> None:
        self.cwr.before_experience(run.y_new)

    def after_training(self, run) -> None:
        self.cwr.after_experience()

    def state_dict(self) -> dict:
        return self.cwr.state_dict()

    def load_state_dict(self, sd: dict) -> None:
        self.cwr.load_state_dict(sd)


class Metrics(Plugin):
    """Tests on every experience seen so far (the accuracy matrix, ``run.acc``)."""

    def after_experience(self, run) -> None:
        test_y, setup, i = run.setup.dataset.test.y, run.setup, run.i
        for j in range(i + 1):
            idx = run.stream[j].test_idx
            c = int((run.strategy.predict(setup.test_latents[idx]) == test_y[idx]).sum()) if len(idx) else 0
            run.acc.record(i, j, c, len(idx))


class Log(Plugin):
    """One entry per experience in ``run.log``: seconds, samples trained, MACs, memory bytes, accuracy."""

    def before_experience(self, run) -> None:
        self.t0, self.before = time.perf_counter(), run.learner.samples_trained

    def after_experience(self, run) -> None:
        trained = run.learner.samples_trained - self.before
        m = run.back_macs
        macs = trained * (m["forward"] + m["backward_input"] + m["backward_weight"]) + len(run.idx) * run.front_macs
        macs += run.strategy.extra_macs(trained, len(run.idx))
        run.log.append({"experience": run.i, "seconds": time.perf_counter() - self.t0, "train_samples": trained,
                        "train_macs": int(macs), "replay_memory_bytes": run.strategy.memory_bytes()["total"],
                        "seen_accuracy": float(run.acc.seen_accuracy()[run.i])})


class Checkpoint(Plugin):
    """Writes the whole run state atomically after every experience (:mod:`tinycl.cl.checkpoint`)."""

    def __init__(self, path, state_format: str):
        self.path, self.format = path, state_format

    def after_experience(self, run) -> None:
        s = run.strategy
        checkpoint.save(self.path, {
            "format": self.format, "config": run.cfg, "next": run.i + 1, "learner": run.learner.state_dict(),
            "memory": s.memory.state_dict() if s.memory is not None else None,
            "cwr": run.plugin_state("cwr"), "generator": run.gen.get_state(),
            "acc_correct": torch.from_numpy(run.acc.correct), "acc_total": torch.from_numpy(run.acc.total),
            "log": run.log, "diverged_from": run.diverged_from, "strategy": s.state_dict()})


class Progress(Plugin):
    """Progress bars: experiences, and the steps of the current one (off with ``progress=False``)."""

    def __init__(self, total: int, start: int, enabled: bool):
        self.enabled = enabled
        self.bar = tqdm(total=total, initial=start, desc="experiences", unit="exp", disable=None if enabled else True)
        self.steps = None

    def before_step(self, learner, n_steps: int) -> None:
        if self.steps is None:
            self.steps = tqdm(total=n_steps, desc="train", unit="step", leave=False,
                              disable=None if self.enabled else True)

    def after_step(self, learner, loss: float) -> None:
        self.steps.update(1)
        self.steps.set_postfix(loss=f"{loss:.3f}")

    def after_training(self, run) -> None:
        if self.steps is not None:
            self.steps.close()
            self.steps = None

    def after_experience(self, run) -> None:
        self.bar.update(1)
        self.bar.set_postfix(acc=f"{run.acc.seen_accuracy()[run.i]:.3f}")

    def close(self) -> None:
        self.bar.close()


class Cost(Plugin):
    """The modelled cost of one learning event (``annotate(setup, cfg)``, e.g. the ``tinycl.hw`` model)
    and what the strategy adds to it (``learning_event_extra``, only for strategies that add work)."""

    def __init__(self, annotate):
        self.annotate = annotate

    def after_run(self, run, results: dict) -> None:
        s = run.strategy
        results["learning_event"] = (self.annotate(run.setup, run.cfg)
                                     if self.annotate is not None and s.trains_back else None)
        extra = s.event_extra()
        if extra is not None:
            results["learning_event_extra"] = extra
