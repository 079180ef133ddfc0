"""The workload of one learning event: per layer and per training step, MACs, bytes and tensors.

A learning event (latent replay): the frozen front runs an INT8 forward on ``batch`` new
samples; their latents join ``n_replays`` stored latents, and the adaptive back is trained on
all of them in ``ceil((batch + n_replays) / batch)`` steps of ``batch`` samples (forward, input
gradient, weight gradient, SGD update). ``latent_layer=None`` trains the whole network.

The model is walked with forward hooks on its leaf modules, so any ``nn.Module`` made of the
supported layers works, not only the zoo. MAC conventions (``tinycl.kernels.macs``) plus, for
the layers that module does not cover (E = elements of the layer's output per step, C = channels):

=============  ========  ===============  ===============  ======
layer          forward   backward_input   backward_weight  update
=============  ========  ===============  ===============  ======
BatchNorm2d    2E        3E               E                2C
activation     E         E                0                0
MaxPool2d      E*kh*kw   E                0                0
AvgPool2d      E*kh*kw   E*kh*kw          0                0
global pool    Ein       Ein              0                0
residual add   E         E                0                0
Flatten        0         0                0                0
=============  ========  ===============  ===============  ======

A frozen BatchNorm2d counts 0: it is folded into the preceding conv of the INT8 front.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from tinycl.errors import TinyclError, UnsupportedLayerError
from tinycl.hw.target import BYTES_PER_ELEMENT
from tinycl.kernels.macs import conv2d_macs, linear_macs
from tinycl.models.blocks import Residual

STEP_NAMES = ("forward", "backward_input", "backward_weight", "update")
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.SiLU, nn.GELU,
                nn.Dropout)
_RESHAPES = (nn.Flatten, nn.Identity)


@dataclass
class LayerWork:
    """One leaf layer. MACs and bytes are per step: ``step_batch`` samples for an adaptive layer,
    one sample for a frozen one (the INT8 front runs sample by sample, ``batch`` times)."""

    name: str
    type: str
    primitive: str        # conv | pointwise | depthwise | linear | batchnorm | activation | maxpool | avgpool | add | reshape
    frozen: bool
    in_shape: tuple       # per sample
    out_shape: tuple      # per sample
    params: int
    geom: dict
    macs: dict            # step -> MACs
    bytes_read: dict      # step -> bytes
    bytes_written: dict   # step -> bytes
    scratch_bytes: dict   # step -> im2col / transpose buffer bytes (whole layer, no tiling)
    saved_keys: tuple     # activation tensors this layer needs in its backward
    in_key: int = 0
    out_key: int = 0


@dataclass
class Workload:
    """A learning event. ``tensors`` maps an activation tensor key to its elements in one step."""

    layers: list[LayerWork]
    precision: str
    batch: int
    step_batch: int
    n_replays: int
    lr_bits: int
    steps: int
    latent_layer: str | None
    latent_elements: int                 # per sample
    input_elements: int                  # per sample
    tensors: dict = field(default_factory=dict)
    first_use: dict = field(default_factory=dict)   # key -> index of the producing layer (-1: step input)
    last_use: dict = field(default_factory=dict)    # key -> index of the last forward consumer

    @property
    def frozen(self) -> list[LayerWork]:
        return [l for l in self.layers if l.frozen]

    @property
    def adaptive(self) -> list[LayerWork]:
        return [l for l in self.layers if not l.frozen]

    def replay_memory_bytes(self) -> int:
        """Bytes of the stored latents (``n_replays`` at ``lr_bits`` bits each element)."""
        return math.ceil(self.n_replays * self.latent_elements * self.lr_bits / 8)

    def replay_traffic_bytes(self) -> dict:
        """Replay-memory traffic of one event: read every stored latent, write the new ones."""
        per = self.latent_elements * self.lr_bits / 8
        return {"read": math.ceil(self.n_replays * per), "written": math.ceil(self.batch * per)}

    def total_macs(self, step: str) -> int:
        return sum(l.macs[step] for l in self.layers)


def _prod(shape) -> int:
    return int(math.prod(shape))


def _primitive(mod: nn.Module, path: str) -> str:
    if isinstance(mod, nn.Conv2d):
        if mod.groups > 1 and mod.groups == mod.in_channels:
            return "depthwise"
        if mod.kernel_size == (1, 1) and mod.stride == (1, 1) and mod.groups == 1:
            return "pointwise"
        return "conv"
    if isinstance(mod, nn.Linear):
        return "linear"
    if isinstance(mod, nn.BatchNorm2d):
        return "batchnorm"
    if isinstance(mod, _ACTIVATIONS):
        return "activation"
    if isinstance(mod, nn.MaxPool2d):
        return "maxpool"
    if isinstance(mod, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        return "avgpool"
    if isinstance(mod, _RESHAPES):
        return "reshape"
    raise UnsupportedLayerError(f"layer {path!r} of type {type(mod).__name__} is not supported by the "
                                "cost model (supported: Conv2d, Linear, BatchNorm2d, activations, pooling, "
                                "Flatten, Dropout, Residual)")


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _layer_macs(prim: str, mod, n: int, ins: tuple, outs: tuple) -> dict:
    """MACs of each step for ``n`` samples of per-sample input ``ins`` and output ``outs``."""
    e_out = n * _prod(outs)
    zero = dict.fromkeys(STEP_NAMES, 0)
    if prim in ("conv", "pointwise", "depthwise"):
        kh, kw = mod.kernel_size
        s, p = _pair(mod.stride), _pair(mod.padding)
        if _pair(mod.dilation) == (1, 1) and not isinstance(mod.padding, str):
            m = dict(conv2d_macs(n, ins[0], mod.out_channels, ins[1], ins[2], kh, kw, s, p, mod.groups))
        else:   # dilation or 'same'/'valid' padding: count from the observed output size
            f = n * mod.out_channels * outs[1] * outs[2] * (ins[0] // mod.groups) * kh * kw
            m = {"forward": f, "backward_input": f, "backward_weight": f,
                 "update": mod.weight.numel()}
        if mod.bias is not None:
            m["update"] += mod.out_channels
        return m
    if prim == "linear":
        rows = n * _prod(ins[:-1])
        return dict(linear_macs(rows, mod.in_features, mod.out_features, mod.bias is not None))
    if prim == "batchnorm":
        c = ins[0]
        return {"forward": 2 * e_out, "backward_input": 3 * e_out, "backward_weight": e_out,
                "update": 2 * c if mod.affine else 0}
    if prim == "activation":
        return {**zero, "forward": e_out, "backward_input": e_out}
    if prim == "maxpool":
        kh, kw = _pair(mod.kernel_size)
        return {**zero, "forward": e_out * kh * kw, "backward_input": e_out}
    if prim == "avgpool":
        if isinstance(mod, nn.AdaptiveAvgPool2d):
            e_in = n * _prod(ins)
            return {**zero, "forward": e_in, "backward_input": e_in}
        kh, kw = _pair(mod.kernel_size)
        return {**zero, "forward": e_out * kh * kw, "backward_input": e_out * kh * kw}
    if prim == "add":
        return {**zero, "forward": e_out, "backward_input": e_out}
    return zero


class _Node:
    def __init__(self, name, mod, prim, ins, outs, in_keys, out_key):
        self.name, self.mod, self.prim = name, mod, prim
        self.ins, self.outs, self.in_keys, self.out_key = ins, outs, in_keys, out_key


def trace(model: nn.Module, input_shape) -> list[_Node]:
    """Run one sample through ``model`` and record every leaf layer in execution order."""
    nodes: list[_Node] = []
    keep: list[torch.Tensor] = []   # keep tensors alive so storage pointers stay unique

    def key(t: torch.Tensor) -> int:
        keep.append(t)
        return t.untyped_storage().data_ptr()

    def leaf_hook(name):
        def hook(mod, inp, out):
            x = inp[0]
            nodes.append(_Node(name, mod, _primitive(mod, name), tuple(x.shape[1:]), tuple(out.shape[1:]),
                               (key(x),), key(out)))
        return hook

    def add_hook(name):
        def hook(mod, inp):
            x = inp[0]
            nodes.append(_Node(name, None, "add", tuple(x.shape[1:]), tuple(x.shape[1:]), (), key(x)))
        return hook

    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, Residual):
            handles.append(mod.post.register_forward_pre_hook(add_hook(f"{name}.add")))
        elif len(list(mod.children())) == 0:
            _primitive(mod, name)   # fail early on an unsupported leaf
            handles.append(mod.register_forward_hook(leaf_hook(name)))
        elif not isinstance(mod, (nn.Sequential, Residual)) and mod is not model and \
                any(True for _ in mod.parameters(recurse=False)):
            raise UnsupportedLayerError(f"layer {name!r} of type {type(mod).__name__} is not supported "
                                        "by the cost model")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = torch.zeros((1, *input_shape))
            keep.append(x)
            model(x)
    except (RuntimeError, ValueError) as e:
        raise TinyclError(f"model does not accept input shape {tuple(input_shape)}: "
                          f"{str(e).splitlines()[0]}") from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    # The first node's input is the network input; residual add inputs are body + shortcut outputs.
    return nodes


def _top(name: str) -> str:
    return name.split(".")[0]


def build_workload(model: nn.Module, input_shape, latent_layer: str | None = None, precision: str = "fp32",
                   batch: int = 1, n_replays: int = 0, lr_bits: int = 8, step_batch: int | None = None) -> Workload:
    """Trace ``model`` and count the work of one learning event (see module docstring).

    ``step_batch`` (default ``batch``) is the number of samples per training step; the frozen
    forward runs one sample at a time on each of the ``batch`` new samples.
    """
    step_batch = batch if step_batch is None else step_batch
    if step_batch < 1:
        raise TinyclError(f"step_batch must be >= 1, got {step_batch}")
    if precision not in ("fp32", "fp16", "bf16", "int8"):
        raise TinyclError(f"unknown precision {precision!r}; choose fp32, fp16, bf16 or int8")
    if batch < 1:
        raise TinyclError(f"batch must be >= 1, got {batch}")
    if n_replays < 0:
        raise TinyclError(f"n_replays must be >= 0, got {n_replays}")
    if not 1 <= lr_bits <= 32:
        raise TinyclError(f"lr_bits must be between 1 and 32, got {lr_bits}")
    top_names = [n for n, _ in model.named_children()]
    if latent_layer is not None and latent_layer not in top_names:
        raise TinyclError(f"unknown latent layer {latent_layer!r}; split points: {', '.join(top_names)}")
    input_shape = tuple(int(v) for v in input_shape)
    nodes = trace(model, input_shape)
    if not nodes:
        raise TinyclError("model has no layers to profile")
    cut = top_names.index(latent_layer) if latent_layer is not None else -1
    b_ad = BYTES_PER_ELEMENT[precision]

    # Residual add: its inputs are the two tensors summed; find them as the latest two outputs
    # that are not consumed by a later node before the add (body output and shortcut output).
    layers: list[LayerWork] = []
    tensors: dict = {}
    first_use: dict = {}
    last_use: dict = {}
    net_in = nodes[0].in_keys[0]
    trainable_seen = False
    for i, nd in enumerate(nodes):
        frozen = nd.mod is not None and cut >= 0 and top_names.index(_top(nd.name)) <= cut
        if nd.prim == "add":
            frozen = cut >= 0 and top_names.index(_top(nd.name)) <= cut
        b = 1 if frozen else b_ad
        n = 1 if frozen else step_batch
        params = sum(p.numel() for p in nd.mod.parameters()) if nd.mod is not None else 0
        macs = _layer_macs(nd.prim, nd.mod, n, nd.ins, nd.outs)
        if frozen:
            macs = {"forward": 0 if nd.prim == "batchnorm" else macs["forward"],
                    "backward_input": 0, "backward_weight": 0, "update": 0}
        else:
            if not trainable_seen:
                macs["backward_input"] = 0   # nothing trainable upstream: no input gradient needed
            if params == 0:
                macs["backward_weight"] = macs["update"] = 0
        if not frozen and params > 0:
            trainable_seen = True
        e_in, e_out = n * _prod(nd.ins), n * _prod(nd.outs)
        wb = params * b
        rd = {"forward": e_in * b + wb, "backward_input": 0, "backward_weight": 0, "update": 0}
        wr = {"forward": e_out * b, "backward_input": 0, "backward_weight": 0, "update": 0}
        if nd.prim == "reshape":   # a view: no data moves
            rd["forward"] = wr["forward"] = 0
        if macs["backward_input"]:
            rd["backward_input"] = e_out * b + wb + (e_in * b if nd.prim in ("batchnorm", "activation", "maxpool") else 0)
            wr["backward_input"] = e_in * b
        if macs["backward_weight"]:
            rd["backward_weight"] = e_out * b + e_in * b
            wr["backward_weight"] = wb
        if macs["update"]:
            rd["update"] = 2 * wb
            wr["update"] = wb
        scratch = dict.fromkeys(STEP_NAMES, 0)
        if nd.prim in ("conv", "depthwise") and not frozen:
            # im2row buffers (PULP-TrainLib builds them for depthwise too: one row of kh*kw taps
            # per channel and pixel); the input gradient's also holds the flipped weights
            kh, kw = nd.mod.kernel_size
            g = 1 if nd.prim == "depthwise" else nd.mod.groups
            scratch["forward"] = scratch["backward_weight"] = \
                n * nd.outs[1] * nd.outs[2] * kh * kw * (nd.ins[0] // g) * b
            if macs["backward_input"]:
                scratch["backward_input"] = n * nd.ins[1] * nd.ins[2] * kh * kw * (nd.outs[0] // g) * b \
                    + (wb if nd.prim == "conv" else 0)
        elif nd.prim in ("pointwise", "linear") and not frozen:
            if macs["backward_input"]:
                scratch["backward_input"] = wb            # transposed weights
            if nd.prim == "pointwise":
                scratch["backward_weight"] = e_in * b     # transposed input
        elif nd.prim == "conv" and frozen:
            kh, kw = nd.mod.kernel_size
            scratch["forward"] = 2 * kh * kw * (nd.ins[0] // nd.mod.groups)   # CMSIS-NN style 2-column buffer
        saved = ()
        if not frozen:
            if macs["backward_weight"] or nd.prim in ("batchnorm", "maxpool"):
                saved = nd.in_keys
            elif nd.prim == "activation" and macs["backward_input"]:
                saved = (nd.out_key,)
        in_key = nd.in_keys[0] if nd.in_keys else 0
        layers.append(LayerWork(
            name=nd.name, type=type(nd.mod).__name__ if nd.mod is not None else "Add", primitive=nd.prim,
            frozen=frozen, in_shape=nd.ins, out_shape=nd.outs, params=params,
            geom=_geom(nd.mod), macs=macs, bytes_read=rd, bytes_written=wr, scratch_bytes=scratch,
            saved_keys=tuple(saved), in_key=in_key, out_key=nd.out_key))
        for k in nd.in_keys:
            last_use[k] = i
        if nd.out_key not in first_use:
            first_use[nd.out_key] = i
        last_use.setdefault(nd.out_key, i)
        tensors[nd.out_key] = max(tensors.get(nd.out_key, 0), e_out)
        for k in nd.in_keys:
            tensors.setdefault(k, e_in)
    first_use.setdefault(net_in, -1)
    _link_residual_inputs(nodes, layers, last_use)

    latent_elems = _prod(nodes[0].ins)
    for l in layers:
        if l.frozen:
            latent_elems = _prod(l.out_shape)
    steps = math.ceil((batch + n_replays) / step_batch)
    return Workload(layers=layers, precision=precision, batch=batch, step_batch=step_batch,
                    n_replays=n_replays, lr_bits=lr_bits,
                    steps=steps, latent_layer=latent_layer, latent_elements=latent_elems,
                    input_elements=_prod(input_shape), tensors=tensors, first_use=first_use,
                    last_use=last_use)


def _link_residual_inputs(nodes, layers, last_use) -> None:
    """Keep a residual block's input alive until its add (the shortcut reads it late).

    The add's own hook sees only the sum, so the block input (the input of the first node of the
    body) is marked as last used at the add.
    """
    for i, nd in enumerate(nodes):
        if nd.prim != "add":
            continue
        block = nd.name[: -len(".add")]
        first = next((j for j, m in enumerate(nodes) if m.name.startswith(block + ".")), None)
        if first is not None and nodes[first].in_keys:
            k = nodes[first].in_keys[0]
            last_use[k] = max(last_use.get(k, i), i)
        layers[i].in_key = layers[i].out_key


def _geom(mod) -> dict:
    if isinstance(mod, nn.Conv2d):
        return {"cin": mod.in_channels, "cout": mod.out_channels, "kh": mod.kernel_size[0],
                "kw": mod.kernel_size[1], "stride": _pair(mod.stride)[0], "groups": mod.groups}
    if isinstance(mod, nn.Linear):
        return {"cin": mod.in_features, "cout": mod.out_features, "kh": 1, "kw": 1, "stride": 1, "groups": 1}
    return {}
