"""The generated C learner's learning event in Python, operation for operation.

One event (``Reference.learn``; the C is ``tc_learn`` in export/c/tc_engine.c):

1. each new sample through the INT8 front (the emulation itself,
   ``QuantizedFront.forward_int``), its codes dequantized to float32;
2. ``k = min(replay_batch, size)`` distinct replays drawn by a partial Fisher-Yates
   shuffle of ``0..size-1`` with the shared PCG32 (``below(size - i)``), unpacked
   (numerics/packing.py) and decoded by the latent quantizer; the batch is the new
   samples followed by the replays;
3. forward, mean softmax cross-entropy, backward and SGD with momentum on the back, in
   the fixed summation order of :mod:`tinycl.export.ref`;
4. the replay memory offered each new sample in turn, with the policy of cl/memory.py
   re-implemented on the shared PCG32:
   - ``"reservoir"`` (Algorithm R): a free slot while there is one, else slot
     ``j = below(seen + 1)`` when ``j < capacity``;
   - ``"ar1"`` (AR1*): experience ``e`` keeps ``quota = capacity // (e + 1)`` slots; while
     it holds fewer, a sample takes a free slot, else the slot ``old[below(len(old))]`` of
     an earlier experience (swap-removed from ``old``); then it replaces ``cur[j]`` when
     ``j = below(cur_seen + t + 1) < quota``. ``cur`` / ``old`` list the slots of this /
     other experiences in ascending order at the start of the event;
   the float latent is encoded (``LatentQuantizer.encode``) and packed (``pack_rows``).

With ``quantize_new`` the new latents are trained as ``decode(encode(latent))``.

FP16 plans (``plan.precision == "fp16"``) round where the engine's fp16 policy rounds
(models/layers.py: ``ctx.act`` / ``ctx.grad``), each value once from float32 to FP16:
the back's input; every op's output (conv, linear, BN, add, pools; ReLU, ReLU6, max pool
and flatten are exact); the loss gradient times the loss scale; every input gradient and
parameter gradient; and the sum of two gradients of a tensor read twice (the engine keeps
that sum in float32 until the next op rounds; a device storing FP16 gradients rounds it).
The kernels read FP16 copies of the float32 master weights; SGD and the momenta stay
float32; gradients are divided by the loss scale, and a step with a non-finite gradient
is skipped with the dynamic scale rule of numerics/lossscale.py.
"""

from __future__ import annotations

import torch

from tinycl.errors import TinyclError
from tinycl.numerics import quant as Q
from tinycl.numerics.latent_quant import LatentQuantizer
from tinycl.numerics.packing import pack_rows, unpack_rows
from tinycl.numerics.rng import Pcg32

from . import ref as R
from .plan import Plan


def _to_fp16(t: torch.Tensor) -> torch.Tensor:
    """float32 rounded to the nearest FP16 (ties to even), kept in float32."""
    return t.to(torch.float16).to(torch.float32)


def _f32(v: float) -> float:
    return float(torch.tensor(v, dtype=torch.float32))


class Reference:
    """The plan's learner state and its learning event, bit-exact with the generated C."""

    def __init__(self, plan: Plan, qfront):
        self.plan, self.front = plan, qfront
        self.rt = _to_fp16 if plan.precision == "fp16" else (lambda t: t)
        ls = plan.loss_scale
        self.scale = float(torch.tensor(ls.get("scale", 1.0), dtype=torch.float32))
        self.good_steps, self.skipped = ls.get("good_steps", 0), ls.get("skipped", 0)
        self.params = {f"{op.name}.{k}": v.clone() for op in plan.back for k, v in op.params.items()}
        self.momenta = {k: plan.momenta.get(k, torch.zeros_like(v)).clone() for k, v in self.params.items()}
        self.bn = {i: (op.attrs["running_mean"].clone(), op.attrs["running_var"].clone())
                   for i, op in enumerate(plan.back) if op.kind == "batchnorm"}
        self.rows = torch.zeros(plan.capacity, plan.row_bytes, dtype=torch.uint8)
        self.labels = torch.zeros(plan.capacity, dtype=torch.int16)
        self.size = 0 if plan.rows is None else int(plan.rows.shape[0])
        if self.size:
            self.rows[:self.size] = plan.rows
            self.labels[:self.size] = plan.labels
        self.exps = torch.zeros(plan.capacity, dtype=torch.int16)
        if self.size:
            self.exps[:self.size] = plan.exps
        self.seen, self.cur_exp, self.cur_seen = plan.seen, plan.cur_exp, plan.cur_seen
        self.experience = plan.experience
        self.rng = Pcg32()
        self.rng.state, self.rng.inc = plan.rng_state, plan.rng_inc
        self.quant = LatentQuantizer(plan.bits, plan.granularity)
        self.quant.scale = torch.tensor(plan.q_scale, dtype=torch.float32)
        self.quant.zero_point = torch.tensor(plan.q_zp, dtype=torch.float32)

    # ------------------------------------------------------------------ front
    def latents(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(int8 codes, float32 latents) of float inputs ``x`` (N x input shape)."""
        q, s, zp = self.front.forward_int(x)
        return q, Q.dequantize(q, s, zp)

    # ------------------------------------------------------------------ back
    def _param(self, op, k):
        """The kernels' copy of a weight (FP16: the master rounded)."""
        v = self.params.get(f"{op.name}.{k}")
        return None if v is None else self.rt(v)

    def forward(self, x: torch.Tensor, train: bool) -> list:
        acts = [self.rt(x)]
        self.saved = {}
        for i, op in enumerate(self.plan.back):
            a, at = acts[op.inputs[0]], op.attrs
            w, b = self._param(op, "weight"), self._param(op, "bias")
            if op.kind == "conv2d":
                y = R.conv_fwd(a, w, b, at["stride"], at["padding"], at["groups"])
            elif op.kind == "linear":
                y = R.linear_fwd(a, w, b)
            elif op.kind == "batchnorm":
                rm, rv = self.bn[i]
                if at["train"] and train:
                    y, mean, inv, rm2, rv2 = R.bn_train_fwd(a, w, b, at["eps"], at["momentum"], rm, rv)
                    self.bn[i] = (rm2, rv2)
                else:
                    (y, inv), mean = R.bn_eval_fwd(a, w, b, rm, rv, at["eps"]), rm
                self.saved[i] = (mean, inv)
            elif op.kind == "relu":
                y = R.relu_fwd(a)
            elif op.kind == "relu6":
                y = R.relu6_fwd(a)
            elif op.kind == "add":
                y = a + acts[op.inputs[1]]
            elif op.kind == "maxpool":
                y, self.saved[i] = R.maxpool_fwd(a, at["kernel"], at["stride"], at["padding"])
            elif op.kind == "avgpool":
                y = R.avgpool_fwd(a, at["kernel"], at["stride"], at["padding"])
            elif op.kind == "gap":
                y = R.gap_fwd(a)
            else:
                y = a.reshape(a.shape[0], -1)
            acts.append(self.rt(y))
        return acts

    def backward(self, acts: list, dlogits: torch.Tensor) -> dict:
        rt = self.rt
        grads, pgrads = {len(acts) - 1: dlogits}, {}

        def give(t, g):   # g rounded as the op stores it, then the sum rounded
            if t != 0:
                grads[t] = rt(g) if t not in grads else rt(grads[t] + rt(g))

        for i in range(len(self.plan.back) - 1, -1, -1):
            op, at = self.plan.back[i], self.plan.back[i].attrs
            if op.output not in grads:
                continue
            dy, x, t0 = grads[op.output], acts[op.inputs[0]], op.inputs[0]
            dx = None
            if op.kind == "conv2d":
                w = self._param(op, "weight")
                if t0:
                    dx = R.conv_bwd_in(dy, w, x.shape, at["stride"], at["padding"], at["groups"])
                dw, db = R.conv_bwd_w(dy, x, w.shape, at["stride"], at["padding"], at["groups"], "bias" in op.params)
            elif op.kind == "linear":
                w = self._param(op, "weight")
                dx = R.linear_bwd_in(dy, w) if t0 else None
                dw, db = R.linear_bwd_w(dy, x, "bias" in op.params)
            elif op.kind == "batchnorm":
                mean, inv = self.saved[i]
                fn = R.bn_train_bwd if at["train"] else R.bn_eval_bwd
                dx, dw, db = fn(dy, x, self._param(op, "weight"), mean, inv)
            elif op.kind == "add":
                give(op.inputs[0], dy)
                give(op.inputs[1], dy)
                continue
            elif op.kind == "relu":
                dx = R.relu_bwd(acts[op.output], dy)
            elif op.kind == "relu6":
                dx = R.relu6_bwd(x, dy)
            elif op.kind == "maxpool":
                dx = R.maxpool_bwd(dy, self.saved[i], x.shape)
            elif op.kind == "avgpool":
                dx = R.avgpool_bwd(dy, x.shape, at["kernel"], at["stride"], at["padding"])
            elif op.kind == "gap":
                dx = R.gap_bwd(dy, x.shape)
            else:
                dx = dy.reshape(x.shape)
            if op.params:
                pgrads[f"{op.name}.weight"] = rt(dw)
                if "bias" in op.params:
                    pgrads[f"{op.name}.bias"] = rt(db)
            if t0 and dx is not None:
                give(t0, dx)
        return pgrads

    # ------------------------------------------------------------------ event
    def _draw(self, k: int) -> list[int]:
        idx = list(range(self.size))
        for i in range(k):
            j = i + self.rng.below(self.size - i)
            idx[i], idx[j] = idx[j], idx[i]
        return idx[:k]

    def learn(self, x: torch.Tensor, labels: torch.Tensor) -> dict:
        """One learning event; returns ``{"latents": int8 codes, "loss": float32 tensor}``."""
        p, n = self.plan, x.shape[0]
        if not 1 <= n <= p.max_new:
            raise TinyclError(f"reference: {n} new samples, allowed 1..{p.max_new}")
        if int(labels.min()) < 0 or int(labels.max()) >= p.classes:
            raise TinyclError(f"reference: labels must be in 0..{p.classes - 1}")
        k = min(p.replay_batch, self.size)
        if n + k < 2 and any(op.kind == "batchnorm" and op.attrs["train"] for op in p.back):
            raise TinyclError("reference: batch statistics need at least 2 samples (new + replays)")
        q, lat = self.latents(x)
        if p.quantize_new:
            lat = self.quant.decode(self.quant.encode(lat))
        idx = self._draw(k)
        xs, ys = [lat], [labels.to(torch.int64)]
        if k:
            codes = unpack_rows(self.rows[idx], p.bits, p.latent_numel).reshape((k,) + p.back_shapes[0])
            xs.append(self.quant.decode(codes))
            ys.append(self.labels[idx].to(torch.int64))
        xb, yb = torch.cat(xs), torch.cat(ys)
        acts = self.forward(xb, train=True)
        loss, d = R.softmax_ce(acts[-1], yb)
        if p.loss_scale:
            d = d * R.c32(self.scale)
        pgrads = self.backward(acts, self.rt(d))
        if self.scale != 1.0:
            pgrads = {k: g / R.c32(self.scale) for k, g in pgrads.items()}
        if self._scaler_update(pgrads):
            for key, g in pgrads.items():
                self.params[key], self.momenta[key] = R.sgd(self.params[key], self.momenta[key], g, p.lr,
                                                           p.momentum, p.weight_decay)
        self._remember(lat, labels)
        return {"latents": q, "loss": loss}

    def _scaler_update(self, grads: dict) -> bool:
        """``LossScaler.update`` (numerics/lossscale.py) on float32 scales: True = take the step."""
        ls = self.plan.loss_scale
        if not ls:
            return True
        if not all(bool(torch.isfinite(g).all()) for g in grads.values()):
            if ls["mode"] == "dynamic":
                self.scale, self.good_steps = max(self.scale / 2.0, _f32(ls["min_scale"])), 0
            self.skipped += 1
            return False
        if ls["mode"] == "dynamic":
            self.good_steps += 1
            if self.good_steps >= ls["growth_interval"]:
                self.scale, self.good_steps = min(self.scale * 2.0, _f32(ls["max_scale"])), 0
        return True

    def set_experience(self, e: int) -> None:
        if not 0 <= e <= 32767 or (self.plan.policy == "ar1" and e < self.cur_exp):
            raise TinyclError(f"reference: experience {e} out of 0..32767 or below the current {self.cur_exp}")
        self.experience = e

    def _dest_reservoir(self) -> int:
        if self.size < self.plan.capacity:
            self.size += 1
            return self.size - 1
        j = self.rng.below(self.seen + 1)
        return j if j < self.plan.capacity else -1

    def _dest_ar1(self, t: int, cur: list, old: list) -> int:
        quota = self.plan.capacity // (self.experience + 1)
        if len(cur) < quota:
            if self.size < self.plan.capacity:
                slot, self.size = self.size, self.size + 1
            elif not old:
                return -1
            else:
                k = self.rng.below(len(old))
                slot = old[k]
                old[k] = old[-1]
                old.pop()
            cur.append(slot)
            return slot
        j = self.rng.below(self.cur_seen + t + 1)
        return cur[j] if j < quota else -1

    def _remember(self, lat: torch.Tensor, labels: torch.Tensor) -> None:
        p, ar1 = self.plan, self.plan.policy == "ar1"
        cur, old = [], []
        if ar1:
            if self.experience > self.cur_exp:
                self.cur_exp, self.cur_seen = self.experience, 0
            ex = self.exps[:self.size].tolist()
            cur = [s for s in range(self.size) if ex[s] == self.experience]
            old = [s for s in range(self.size) if ex[s] != self.experience]
        for s in range(lat.shape[0]):
            dest = self._dest_ar1(s, cur, old) if ar1 else self._dest_reservoir()
            self.seen += 1
            if dest >= 0:
                codes = self.quant.encode(lat[s:s + 1]).reshape(1, -1)
                self.rows[dest] = pack_rows(codes, p.bits)[0]
                self.labels[dest] = int(labels[s])
                self.exps[dest] = self.experience
        if ar1:
            self.cur_seen += lat.shape[0]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluation-mode logits, one sample at a time (as ``tinycl_logits``)."""
        return torch.cat([self.forward(self.latents(x[i:i + 1])[1], train=False)[-1] for i in range(x.shape[0])])
