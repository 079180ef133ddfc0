"""A neutral plan of a latent-replay learner for code generation.

A plan is lists of :class:`Op` over numbered tensors (tensor 0 is the input; each op
writes one new tensor, in execution order). The front works on INT8 codes of one
sample, the back on FP32 batches (or FP16: ``precision="fp16"``, see :func:`back_precision`).
Builders read today's ``QuantizedFront.ops`` and a ``Network``'s layer tree; a builder from a
captured graph can fill the same fields.

Front kinds: ``conv_int8``, ``linear_int8``, ``add_int8``, ``maxpool_int8``,
``avgpool_int8``, ``gap_int8``, ``clamp_int8``, ``flatten``.
Back kinds: ``conv2d`` (any kernel, stride, padding, groups: depthwise and pointwise
included), ``linear``, ``batchnorm``, ``relu``, ``relu6``, ``add``, ``maxpool``,
``avgpool``, ``gap``, ``flatten``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from tinycl.errors import TinyclError
from tinycl.kernels.macs import conv_out_size, pair

FRONT_KINDS = ("conv_int8", "linear_int8", "add_int8", "maxpool_int8", "avgpool_int8", "gap_int8",
               "clamp_int8", "flatten")
POLICIES = ("reservoir", "ar1")
BACK_KINDS = ("conv2d", "linear", "batchnorm", "relu", "relu6", "add", "maxpool", "avgpool", "gap", "flatten")


@dataclass
class Op:
    """One op: ``kind``, input tensor ids, output tensor id, attributes, parameter tensors."""

    kind: str
    inputs: list[int]
    output: int
    attrs: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    name: str = ""


@dataclass
class Plan:
    """Everything the generator needs; shapes are per sample (no batch dimension)."""

    front: list[Op]
    front_shapes: list[tuple]
    in_scale: float
    in_zp: int
    lat_scale: float
    lat_zp: int
    back: list[Op]
    back_shapes: list[tuple]
    classes: int
    bits: int = 8
    granularity: str = "tensor"
    q_scale: list = field(default_factory=list)     # float32 values
    q_zp: list = field(default_factory=list)
    capacity: int = 0
    rows: torch.Tensor | None = None                # uint8 (size, row_bytes)
    labels: torch.Tensor | None = None              # int16 (size,)
    exps: torch.Tensor | None = None                # int16 (size,) experience ids
    policy: str = "reservoir"                       # or "ar1"
    cur_exp: int = -1                               # ar1: the memory's current experience
    cur_seen: int = 0                               # ar1: samples offered in it
    experience: int = 0                             # experience id of the next events
    quantize_new: bool = False                      # train on new latents through the quantizer
    seen: int = 0
    rng_state: int = 0
    rng_inc: int = 1
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    momenta: dict = field(default_factory=dict)     # param key "op.name" -> tensor
    max_new: int = 8
    replay_batch: int = 8
    precision: str = "fp32"                         # "fp16": _Float16 tensors, float master weights
    loss_scale: dict = field(default_factory=dict)  # the loss scaler's settings and state ({}: none)

    @property
    def latent_numel(self) -> int:
        return math.prod(self.back_shapes[0])

    @property
    def row_bytes(self) -> int:
        return (self.latent_numel * self.bits + 7) // 8

    def param_keys(self) -> list[str]:
        return [f"{op.name}.{k}" for op in self.back for k in op.params]


_pair = pair


def _pool_shape(shape, k, s, p):
    c, h, w = shape
    return (c, conv_out_size(h, k[0], s[0], p[0]), conv_out_size(w, k[1], s[1], p[1]))


class _Graph:
    """Ops and per-sample tensor shapes being built (tensor 0: the input)."""

    def __init__(self, input_shape):
        self.ops: list[Op] = []
        self.shapes: list[tuple] = [tuple(input_shape)]

    def add(self, kind, inputs, shape, attrs=None, params=None, name="") -> int:
        self.shapes.append(tuple(int(v) for v in shape))
        out = len(self.shapes) - 1
        self.ops.append(Op(kind, list(inputs), out, attrs or {}, params or {}, name))
        return out


# ----------------------------------------------------------------------------- front

def front_from_quantized(qf, input_shape) -> tuple[list[Op], list[tuple]]:
    """Ops and tensor shapes of a :class:`tinycl.models.int8_front.QuantizedFront` (its op DAG)."""
    from tinycl.models import int8_ops as Q8
    g = _Graph(input_shape)
    ids, zps = {qf.input_name: 0}, {qf.input_name: int(qf.in_zp)}
    for it in qf.ops:
        t = ids[it.inputs[0]]
        if isinstance(it, Q8.Weighted):
            ids[it.name], zps[it.name] = _front_weighted(g, it, t), int(it.out_zp)
        elif isinstance(it, Q8.Add):
            ids[it.name], zps[it.name] = _front_add(g, it, t, ids[it.inputs[1]]), int(it.out_zp)
        elif isinstance(it, Q8.Keep):
            ids[it.name], zps[it.name] = _front_keep(g, it, t, zps[it.inputs[0]]), zps[it.inputs[0]]
        else:
            raise TinyclError(f"C export: front op {type(it).__name__} ('{it.name}') is not supported")
    if ids[qf.output] != len(g.shapes) - 1:
        raise TinyclError("C export: the front's output is not its last op")
    return g.ops, g.shapes


def _front_weighted(g: _Graph, it, t: int) -> int:
    p = {"w": it.wq.to(torch.int8), "bias": it.bq.to(torch.int32), "mult": it.mult.to(torch.int32),
         "shift": it.shift.to(torch.int32)}
    a = {"x_zp": int(it.in_zp), "out_zp": int(it.out_zp), "qmin": int(it.qmin), "qmax": int(it.qmax)}
    if it.kind != "conv":
        if len(g.shapes[t]) != 1:
            raise TinyclError(f"C export: linear '{it.name}' on a {len(g.shapes[t])}-d tensor is not supported")
        return g.add("linear_int8", [t], (it.wq.shape[0],), a, p, it.name)
    k, s, pd = tuple(it.wq.shape[2:]), _pair(it.conv["stride"]), _pair(it.conv["padding"])
    a.update(kernel=k, stride=s, padding=pd, groups=int(it.conv["groups"]))
    out = (it.wq.shape[0],) + _pool_shape(g.shapes[t], k, s, pd)[1:]
    return g.add("conv_int8", [t], out, a, p, it.name)


def _front_keep(g: _Graph, it, t: int, zp: int) -> int:
    from tinycl.models.int8_ops import act_bounds
    shape, k = g.shapes[t], it.kind
    if k in ("maxpool", "avgpool"):
        kk, ss, pp = _pair(it.kw["kernel"]), _pair(it.kw["stride"]), _pair(it.kw["padding"])
        a = {"kernel": kk, "stride": ss, "padding": pp, "x_zp": zp,
             "include_pad": int(it.kw.get("count_include_pad", True))}
        return g.add(k + "_int8", [t], _pool_shape(shape, kk, ss, pp), a, name=it.name)
    if k == "gap":
        return g.add("gap_int8", [t], (shape[0], 1, 1), {"x_zp": zp}, name=it.name)
    if k == "view" and len(it.kw["shape"]) == 1:
        return g.add("flatten", [t], (math.prod(shape),), name=it.name)
    if k in ("relu", "relu6"):
        lo, hi = act_bounds(k, it.scale, zp)
        return g.add("clamp_int8", [t], shape, {"qmin": lo, "qmax": hi}, name=it.name)
    raise TinyclError(f"C export: front op '{it.name}' ({k}) is not supported")


def _front_add(g: _Graph, it, ta: int, tb: int) -> int:
    pr = it.params
    add = [pr[k] for k in ("left_shift", "a_mult", "a_shift", "b_mult", "b_shift", "out_mult", "out_shift")]
    a = {"x_zp": int(it.a_zp), "b_zp": int(it.b_zp), "out_zp": int(it.out_zp), "qmin": int(it.qmin),
         "qmax": int(it.qmax)}
    return g.add("add_int8", [ta, tb], g.shapes[ta], a, {"add": torch.tensor(add, dtype=torch.int32)}, it.name)


# ----------------------------------------------------------------------------- back

def back_from_network(net, train_bn: bool = True) -> tuple[list[Op], list[tuple]]:
    """Ops and tensor shapes of a ``Network`` (its captured graph, current weights and BN statistics).

    Refuses (TinyclError, one line) what the C backend cannot run: dropout with p > 0,
    LeakyReLU, a precision :func:`back_precision` refuses.
    """
    back_precision(net)
    root = net.root
    g = _Graph(net.input_shape)
    ids = {root.graph.input: 0}
    for node in root.nodes:
        ins = [ids[i] for i in node.inputs]
        ids[node.name] = _back_node(g, node, root.ops[node.name], ins, train_bn)
    if not g.ops:
        raise TinyclError("C export: the back has no layers")
    if ids[root.graph.output] != len(g.shapes) - 1:
        raise TinyclError("C export: the back's output is not its last op")
    return g.ops, g.shapes


def back_precision(net) -> tuple[str, dict]:
    """``(precision, loss scale)`` of the C back for ``net``'s policy, or a one-line TinyclError.

    "fp32"; or "fp16": weights, activations and gradients FP16 with FP32 accumulation
    (``accumulate="fp32"``), FP32 master weights, round-to-nearest (not stochastic), loss
    scaling none, static or dynamic (its state: scale, clean steps, skipped steps)."""
    p = net.precision
    fmts = {p.weights, p.activations, p.gradients}
    why = (f"formats {p.weights}/{p.activations}/{p.gradients}" if fmts not in ({"fp32"}, {"fp16"}) else
           "" if p.is_fp32 else "accumulate='native'" if p.accumulate != "fp32" else
           "no master weights" if not p.master_weights else "stochastic rounding" if p.stochastic else "")
    if why:
        raise TinyclError(f"C export: precision {p.name!r} ({why}) is not supported; supported: fp32, and fp16 "
                          f"with fp32 accumulation, fp32 master weights and round-to-nearest")
    name, sc = ("fp32" if p.is_fp32 else "fp16"), net.scaler
    if sc is None:
        return name, {}
    return name, {"mode": "dynamic" if sc.dynamic else "static", "scale": float(sc.scale),
                    "good_steps": int(sc.good_steps), "skipped": int(sc.skipped),
                    "growth_interval": int(sc.growth_interval), "min_scale": float(sc.min_scale),
                    "max_scale": float(sc.max_scale)}


def _back_node(g: _Graph, node, m, ins: list[int], train_bn: bool) -> int:
    t = ins[0]
    shape, kind = g.shapes[t], m.kind
    params = {k: p.value.detach().contiguous().to(torch.float32).clone() for k, p in m.params.items()}
    if node.op == "add" and len(ins) == 2:
        return g.add("add", ins, g.shapes[ins[0]], name=node.name)
    if kind == "conv2d":
        w = params["weight"]
        k, s, p = tuple(w.shape[2:]), _pair(m.stride), _pair(m.padding)
        a = {"kernel": k, "stride": s, "padding": p, "groups": int(m.groups)}
        return g.add("conv2d", [t], (w.shape[0],) + _pool_shape(shape, k, s, p)[1:], a, params, node.name)
    if kind == "linear" and len(shape) == 1:
        return g.add("linear", [t], (params["weight"].shape[0],), {}, params, node.name)
    if kind == "batchnorm2d" and len(shape) == 3:
        a = {"eps": float(m.eps), "momentum": float(m.momentum), "train": bool(train_bn and not m.frozen_stats),
             "running_mean": m.buffers["running_mean"].detach().to(torch.float32).clone(),
             "running_var": m.buffers["running_var"].detach().to(torch.float32).clone()}
        return g.add("batchnorm", [t], shape, a, params, node.name)
    if kind in ("relu", "relu6"):
        return g.add(kind, [t], shape, name=node.name)
    if kind in ("maxpool2d", "avgpool2d"):
        kk, ss, pp = _pair(m.kernel), _pair(m.stride), _pair(m.padding)
        a = {"kernel": kk, "stride": ss, "padding": pp}
        return g.add(kind[:-2], [t], _pool_shape(shape, kk, ss, pp), a, name=node.name)
    if kind == "global_avgpool":
        return g.add("gap", [t], (shape[0], 1, 1), name=node.name)
    if kind == "reshape" and len(node.shape) == 1:
        return g.add("flatten", [t], (math.prod(shape),), name=node.name)
    if kind == "identity" or (kind == "dropout" and m.p == 0):
        return t
    what = f"{kind} (p={m.p})" if kind == "dropout" else node.op
    raise TinyclError(f"C export: back layer '{node.name}' of kind {what} is not supported; "
                      f"supported: {', '.join(BACK_KINDS)}")


def check_plan(plan: Plan) -> None:
    """One-line TinyclError for what the C backend cannot generate."""
    for op in plan.front:
        if op.kind not in FRONT_KINDS:
            raise TinyclError(f"C export: front op kind {op.kind!r} is not supported")
    for op in plan.back:
        if op.kind not in BACK_KINDS:
            raise TinyclError(f"C export: back op kind {op.kind!r} is not supported")
    if not isinstance(plan.bits, int) or not 1 <= plan.bits <= 8:
        raise TinyclError(f"C export: latent format {plan.bits!r} is not supported (integer 1..8 bits)")
    if plan.front_shapes[-1] != plan.back_shapes[0]:
        raise TinyclError(f"C export: front output {plan.front_shapes[-1]} differs from back input "
                          f"{plan.back_shapes[0]}")
    if plan.back_shapes[-1] != (plan.classes,):
        raise TinyclError(f"C export: back output {plan.back_shapes[-1]} is not ({plan.classes},) logits")
    if plan.policy not in POLICIES:
        raise TinyclError(f"C export: replay policy {plan.policy!r} is not supported "
                          f"(supported: {', '.join(POLICIES)})")
    if plan.precision not in ("fp32", "fp16"):
        raise TinyclError(f"C export: precision {plan.precision!r} is not supported (fp32, fp16)")
    if plan.loss_scale and plan.loss_scale.get("mode") not in ("static", "dynamic"):
        raise TinyclError(f"C export: loss scale mode {plan.loss_scale.get('mode')!r} is not supported")
    if plan.max_new < 1 or plan.replay_batch < 0 or plan.capacity < 1:
        raise TinyclError("C export: max_new >= 1, replay_batch >= 0 and capacity >= 1 are required")


def build_plan(qfront, input_shape, net, classes: int, memory=None, optimizer=None, rng=None,
               max_new: int = 8, replay_batch: int = 8, train_bn: bool = True, quantize_new: bool = False) -> Plan:
    """A plan from a QuantizedFront, a back Network, a ReplayMemory with policy "reservoir" or
    "ar1" (or None, then set ``capacity`` and the quantizer fields on the plan), an SGD
    optimizer and a Pcg32. ``quantize_new``: train on new latents through the replay
    quantizer (the runner's ``lr_quantize_new``)."""
    from tinycl.numerics.rng import Pcg32
    front, fshapes = front_from_quantized(qfront, input_shape)
    back, bshapes = back_from_network(net, train_bn)
    rng = rng or Pcg32(0)
    plan = Plan(front, fshapes, float(qfront.in_scale), int(qfront.in_zp), float(qfront.out_scale),
                int(qfront.out_zp), back, bshapes, int(classes), max_new=int(max_new),
                replay_batch=int(replay_batch), rng_state=rng.state, rng_inc=rng.inc, quantize_new=bool(quantize_new))
    plan.precision, plan.loss_scale = back_precision(net)
    if memory is not None:
        if memory.policy not in POLICIES:
            raise TinyclError(f"C export: replay policy {memory.policy!r} is not supported "
                              f"(supported: {', '.join(POLICIES)})")
        q = memory.quantizer
        if q.is_float or not q.fitted:
            raise TinyclError(f"C export: latent format {q.bits!r} is not supported (integer 1..8 bits)")
        sd = memory.state_dict()
        plan.bits, plan.granularity = int(q.bits), q.granularity
        plan.q_scale, plan.q_zp = q.scale.tolist(), q.zero_point.tolist()
        plan.capacity, plan.seen = int(memory.capacity), int(sd["seen"])
        if sd["size"] and tuple(sd["sample_shape"]) != bshapes[0]:
            raise TinyclError(f"C export: replay samples {tuple(sd['sample_shape'])} differ from latents {bshapes[0]}")
        plan.rows, plan.labels, plan.exps = sd["rows"].clone(), sd["labels"].clone(), sd["experiences"].clone()
        plan.policy, plan.cur_exp, plan.cur_seen = memory.policy, int(sd["cur_exp"]), int(sd["cur_seen"])
        plan.experience = max(plan.cur_exp, 0)
    if optimizer is not None:
        if getattr(optimizer, "nesterov", False) or getattr(optimizer, "dampening", 0):
            raise TinyclError("C export: optimizer with Nesterov or dampening is not supported (plain SGD + momentum)")
        plan.lr, plan.momentum = float(optimizer.lr), float(optimizer.momentum)
        plan.weight_decay = float(optimizer.weight_decay)
        keys = {f"{op.name}.{k}": op.params[k] for op in back for k in op.params}
        plan.momenta = {k: v.detach().contiguous().to(torch.float32).clone()
                        for k, v in optimizer.state.items() if k in keys}
    return plan
