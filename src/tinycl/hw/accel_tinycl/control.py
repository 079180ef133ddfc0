"""The CL control unit: runs a model's training steps on the PU and manages the rehearsal memory.

For every new sample: forward, loss, backward, SGD update on the PU; then
``replays_per_new_sample`` samples drawn uniformly from the rehearsal memory get the same
step; then the new sample is offered to the memory by reservoir sampling (stored while
the memory has room, else it replaces a uniformly drawn slot with probability
capacity / samples seen). The policy is an assumption: the paper does not publish it.

:class:`ControlUnit` computes (with :class:`ProcessingUnit`); :func:`step_counts` and
:func:`epoch_summary` give the same counts in closed form for whole epochs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import nn

from tinycl.errors import UnsupportedLayerError

from .arch import Arch
from .cost import control_counts, conv_counts, dense_counts, loss_counts, relu_counts, update_counts
from .counts import PassCount
from .pu import ProcessingUnit


@dataclass
class LayerSpec:
    """One layer of the plan; shapes of one sample (C, H, W) or (F,)."""

    name: str
    kind: str            # conv, relu, flatten, dense
    in_shape: tuple
    out_shape: tuple
    module: nn.Module


def plan(model: nn.Module, input_shape: tuple) -> list[LayerSpec]:
    """The model's captured graph as PU layer specs: a chain of Conv2d, ReLU, flatten and Linear."""
    from tinycl.graph import capture
    graph = capture(model, tuple(input_shape))
    specs, prev = [], graph.input
    kinds = {"conv2d": "conv", "relu": "relu", "reshape": "flatten", "linear": "dense"}
    for node in graph.compute_nodes():
        kind = kinds.get(node.op)
        if kind is None or node.inputs != [prev] or (kind == "flatten" and len(node.shape) != 1):
            why = "a chain of Conv2d, ReLU, Flatten and Linear" if kind else f"op {node.op!r}"
            raise UnsupportedLayerError(f"layer {node.name!r} ({node.module_type or node.op}) is not supported by "
                                        f"the TinyCL PU model (it runs {why})")
        m = model.get_submodule(node.module) if kind in ("conv", "dense") else None
        if kind in ("conv", "dense") and type(m) not in (nn.Conv2d, nn.Linear):
            raise UnsupportedLayerError(f"layer {node.name!r}: the TinyCL PU model needs Conv2d / Linear modules")
        if kind == "conv" and node.attrs["groups"] != 1:
            raise UnsupportedLayerError(f"layer {node.name!r}: the TinyCL PU models plain convs only "
                                        "(groups=1, dilation=1, numeric zero padding)")
        specs.append(LayerSpec(node.name, kind, tuple(graph[prev].shape), tuple(node.shape), m))
        prev = node.name
    return specs


def num_params(specs: list[LayerSpec]) -> int:
    return sum(p.numel() for s in specs if s.module is not None for p in s.module.parameters())


def step_counts(arch: Arch, specs: list[LayerSpec], order: str) -> list[PassCount]:
    """Closed-form counts of one training step (forward, loss, backward, update), in PU order.

    The first layer computes no input gradient (nothing below it needs one)."""
    out: list[PassCount] = []
    for s in specs:
        m = s.module
        if s.kind == "conv":
            out.append(conv_counts(arch, "conv_fwd", order, s.in_shape[0], m.out_channels, s.in_shape[1],
                                   s.in_shape[2], *m.kernel_size, m.stride, m.padding, m.bias is not None, s.name))
        elif s.kind == "relu":
            out.append(relu_counts(arch, "relu_fwd", int(torch.tensor(s.in_shape).prod()), s.name))
        elif s.kind == "dense":
            out.append(dense_counts(arch, "dense_fwd", m.in_features, m.out_features, m.bias is not None, s.name))
    out.append(loss_counts(arch, specs[-1].out_shape[0]))
    for idx in range(len(specs) - 1, -1, -1):
        s, m = specs[idx], specs[idx].module
        if s.kind == "conv":
            args = (s.in_shape[0], m.out_channels, s.in_shape[1], s.in_shape[2], *m.kernel_size, m.stride, m.padding)
            if idx > 0:
                out.append(conv_counts(arch, "conv_dx", order, *args, layer=s.name))
            out.append(conv_counts(arch, "conv_dw", order, *args, bias=m.bias is not None, layer=s.name))
        elif s.kind == "relu" and idx > 0:
            out.append(relu_counts(arch, "relu_bwd", int(torch.tensor(s.in_shape).prod()), s.name))
        elif s.kind == "dense":
            if idx > 0:
                out.append(dense_counts(arch, "dense_dx", m.in_features, m.out_features, layer=s.name))
            out.append(dense_counts(arch, "dense_dw", m.in_features, m.out_features, m.bias is not None, s.name))
    out.append(update_counts(arch, num_params(specs)))
    return out


def expected_inserts(samples: int, capacity: int) -> float:
    """Expected reservoir insertions over ``samples`` new samples: every one while there is
    room, then sample n (1-based) with probability capacity / n."""
    if samples <= capacity:
        return float(samples)
    return capacity + sum(capacity / n for n in range(capacity + 1, samples + 1))


class ControlUnit:
    """Runs the CL workload on a :class:`ProcessingUnit`, computing with real weights.

    ``model``: a Conv/ReLU/Flatten/Linear ``nn.Sequential`` (its weights are copied, in
    ``dtype``). ``log`` records each step as ``("new", k)`` or ``("replay", k)``, k being the
    index of the sample in arrival order, so the run can be replayed on the engine.
    """

    def __init__(self, arch: Arch, model: nn.Sequential, input_shape: tuple, order: str = "snake",
                 lr: float = 0.01, replays: int | None = None, capacity: int | None = None, seed: int = 0,
                 dtype=torch.float32):
        self.arch, self.pu = arch, ProcessingUnit(arch, order)
        self.specs = plan(model, input_shape)
        self.params = {k: v.detach().clone().to(dtype) for k, v in model.named_parameters()}
        self.lr, self.dtype = lr, dtype
        self.replays = arch.replays_per_new_sample if replays is None else replays
        self.capacity = arch.rehearsal_capacity if capacity is None else capacity
        self.rng = random.Random(seed)
        self.memory: list[tuple[int, torch.Tensor, int]] = []   # (arrival index, x, label)
        self.seen = 0
        self.log: list[tuple[str, int]] = []
        self.counts: list[PassCount] = []

    def _p(self, layer, what):
        return self.params.get(f"{layer}.{what}")

    def train_step(self, x: torch.Tensor, label: int) -> tuple[float, list[PassCount]]:
        """One step on the PU: forward, loss, backward, update. Returns (loss, counts)."""
        pu, pcs, acts = self.pu, [], []
        h = x.to(self.dtype)
        for s in self.specs:
            acts.append(h)
            if s.kind == "conv":
                m = s.module
                h, pc = pu.conv_forward(h, self._p(s.name, "weight"), self._p(s.name, "bias"), m.stride, m.padding,
                                        layer=s.name)
            elif s.kind == "relu":
                h, pc = pu.relu_forward(h, s.name)
            elif s.kind == "flatten":
                h = h.reshape(-1)
                continue
            else:
                h, pc = pu.dense_forward(h, self._p(s.name, "weight"), self._p(s.name, "bias"), s.name)
            pcs.append(pc)
        (loss, g), pc = pu.loss(h, int(label))
        pcs.append(pc)
        grads = {}
        for idx in range(len(self.specs) - 1, -1, -1):
            s, a = self.specs[idx], acts[idx]
            if s.kind == "conv":
                m, w = s.module, self._p(s.name, "weight")
                gin = None
                if idx > 0:
                    gin, pc = pu.conv_backward_input(g, w, a.shape, m.stride, m.padding, layer=s.name)
                    pcs.append(pc)
                (dw, db), pc = pu.conv_backward_weight(g, a, w.shape, m.stride, m.padding,
                                                       bias=m.bias is not None, layer=s.name)
                pcs.append(pc)
                grads[f"{s.name}.weight"], g = dw, gin
                if db is not None:
                    grads[f"{s.name}.bias"] = db
            elif s.kind == "relu":
                if idx > 0:
                    g, pc = pu.relu_backward(g, torch.relu(a), s.name)   # y = relu(x), stored in forward
                    pcs.append(pc)
            elif s.kind == "flatten":
                g = g.reshape(a.shape) if g is not None else None
            else:
                w = self._p(s.name, "weight")
                gin = None
                if idx > 0:
                    gin, pc = pu.dense_backward_input(g, w, s.name)
                    pcs.append(pc)
                (dw, db), pc = pu.dense_backward_weight(g, a, s.module.bias is not None, s.name)
                pcs.append(pc)
                grads[f"{s.name}.weight"], g = dw, gin
                if db is not None:
                    grads[f"{s.name}.bias"] = db
        self.params, pc = pu.sgd_update(self.params, grads, self.lr)
        pcs.append(pc)
        return loss, pcs

    def observe(self, x: torch.Tensor, label: int) -> list[float]:
        """Learn one new sample: its step, the replays' steps, then the reservoir insert."""
        k, sample_words = self.seen, x.numel()
        self.seen += 1
        losses = []
        loss, pcs = self.train_step(x, label)
        losses.append(loss)
        self.log.append(("new", k))
        draws = [self.rng.randrange(len(self.memory)) for _ in range(self.replays)] if self.memory else []
        insert_at = None
        if len(self.memory) < self.capacity:
            insert_at = len(self.memory)
        else:
            j = self.rng.randrange(self.seen)
            insert_at = j if j < self.capacity else None
        pcs.append(control_counts(self.arch, sample_words, new=True, inserted=insert_at is not None))
        self.counts.extend(pcs)
        for d in draws:
            kk, xr, yr = self.memory[d]
            loss, pcs = self.train_step(xr, yr)
            losses.append(loss)
            self.log.append(("replay", kk))
            pcs.append(control_counts(self.arch, sample_words, new=False, inserted=False))
            self.counts.extend(pcs)
        if insert_at is not None:
            item = (k, x.detach().clone(), int(label))
            if insert_at == len(self.memory):
                self.memory.append(item)
            else:
                self.memory[insert_at] = item
        return losses
