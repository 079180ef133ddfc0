"""The workload of one learning event: per layer and per training step, MACs, bytes and tensors.

A learning event (latent replay): the frozen front runs an INT8 forward on ``batch`` new
samples; their latents join ``n_replays`` stored latents, and the adaptive back is trained on
all of them in ``ceil((batch + n_replays) / batch)`` steps of ``batch`` samples (forward, input
gradient, weight gradient, SGD update). ``latent_layer=None`` trains the whole network.

The model is read from its captured graph (:mod:`tinycl.graph`), so any model ``from_torch``
accepts can be profiled; the work of each node comes from :func:`tinycl.graph.counts.node_counts`
(MACs of conv / linear, element operations of the rest). A frozen batch norm counts 0: it is
folded into the preceding conv of the INT8 front.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import nn

from tinycl.errors import TinyclError
from tinycl.graph import Graph, Node, capture
from tinycl.graph.counts import POINTWISE, node_counts, param_count
from tinycl.hw.target import BYTES_PER_ELEMENT

STEP_NAMES = ("forward", "backward_input", "backward_weight", "update")


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
    in_key: str = ""
    out_key: str = ""


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


def _flat(shape: tuple) -> tuple:
    """A shape, or the outputs of a multi-output node (a split) as one flat tensor of all their elements."""
    return (sum(_prod(s) for s in shape),) if shape and isinstance(shape[0], tuple) else tuple(shape)


_VIEWS = ("reshape", "getitem", "detach", "param", "const")       # no data moves
_COPIES = ("cat", "split", "permute", "slice")                    # data moves, no arithmetic


def _primitive(node: Node) -> str:
    """The cost models' primitive of a node (what its rate tables are keyed by)."""
    op, a = node.op, node.attrs
    if op in ("conv2d", "conv1d", "conv_general"):
        if a["groups"] > 1 and a["groups"] == a["in_channels"]:
            return "depthwise"
        if all(k == 1 for k in a["kernel"]) and all(s == 1 for s in a["stride"]) and a["groups"] == 1:
            return "pointwise"
        return "conv"
    if op in ("linear", "batchnorm", "maxpool"):
        return op
    if op in ("matmul", "sdpa", "linear_t"):  # products of two tensors, or of computed weights: a GEMM
        return "linear"
    if op in ("avgpool", "adaptive_avgpool", "mean", "sum"):
        return "avgpool"
    if op in ("add", "sub", "mul", "div"):
        return "add"
    if op in POINTWISE or op in ("layernorm", "groupnorm", "softmax", "upsample"):
        return "activation"
    return "reshape"


def _geom(node: Node, graph: Graph) -> dict:
    a = node.attrs
    if node.op in ("matmul", "sdpa", "linear_t"):  # (.., K) x (K, N) per row: a linear's geometry
        # attention: the scores' GEMM (E -> key length) stands for both of its GEMMs (the MACs count both)
        cout = graph[node.inputs[1]].shape[-2] if node.op == "sdpa" else node.shape[-1]
        return {"cin": graph[node.inputs[0]].shape[-1], "cout": cout, "kh": 1, "kw": 1, "stride": 1, "groups": 1}
    if node.op in ("conv2d", "conv1d", "conv_general"):
        k = a["kernel"]
        pad, st = tuple(a["padding"]), tuple(a["stride"])
        return {"cin": a["in_channels"], "cout": a["out_channels"], "kh": k[0] if len(k) == 2 else 1,
                "kw": k[-1], "stride": st[0], "groups": a["groups"],
                "padding_hw": pad if len(pad) == 2 else (0, pad[0]), "stride_hw": st if len(st) == 2 else (1, st[0])}
    if node.op == "linear":
        return {"cin": a["in_features"], "cout": a["out_features"], "kh": 1, "kw": 1, "stride": 1, "groups": 1}
    return {}


def _saved(node: Node, prim: str, macs: dict) -> tuple:
    """Tensors a trained node keeps for its backward."""
    if macs["backward_weight"] or prim in ("batchnorm", "maxpool") or node.op in ("mul", "div"):
        return tuple(node.inputs)
    if prim == "activation" and macs["backward_input"]:
        return (node.name,) if node.op in ("relu", "sigmoid", "tanh") else tuple(node.inputs)
    return ()


def _scratch(node: Node, graph: Graph, prim: str, frozen: bool, n: int, b: int, macs: dict) -> dict:
    """im2col / transpose buffers of each step (whole layer, no tiling), in bytes."""
    ins, outs = graph[node.inputs[0]].shape, node.shape
    scratch = dict.fromkeys(STEP_NAMES, 0)
    g = _geom(node, graph)
    wb = param_count(node, graph) * b
    hw_in = (ins[1], ins[2]) if len(ins) == 3 else (1, ins[-1])
    hw_out = (outs[1], outs[2]) if len(outs) == 3 else (1, outs[-1])
    if prim in ("conv", "depthwise") and not frozen:
        # im2row buffers (PULP-TrainLib builds them for depthwise too); the input gradient's also
        # holds the flipped weights
        grp = 1 if prim == "depthwise" else g["groups"]
        scratch["forward"] = scratch["backward_weight"] = \
            n * hw_out[0] * hw_out[1] * g["kh"] * g["kw"] * (ins[0] // grp) * b
        if macs["backward_input"]:
            scratch["backward_input"] = n * hw_in[0] * hw_in[1] * g["kh"] * g["kw"] * (outs[0] // grp) * b \
                + (wb if prim == "conv" else 0)
    elif prim in ("pointwise", "linear") and not frozen:
        if macs["backward_input"]:
            scratch["backward_input"] = wb            # transposed weights
        if prim == "pointwise":
            scratch["backward_weight"] = n * _prod(ins) * b     # transposed input
    elif prim == "conv" and frozen:
        scratch["forward"] = 2 * g["kh"] * g["kw"] * (ins[0] // g["groups"])   # CMSIS-NN style 2-column buffer
    return scratch


def _traffic(prim: str, macs: dict, e_in: int, e_out: int, wb: int, b: int) -> tuple[dict, dict]:
    """(bytes read, bytes written) of each step."""
    rd = {"forward": e_in * b + wb, "backward_input": 0, "backward_weight": 0, "update": 0}
    wr = {"forward": e_out * b, "backward_input": 0, "backward_weight": 0, "update": 0}
    if macs["backward_input"]:
        rd["backward_input"] = e_out * b + wb + (e_in * b if prim in ("batchnorm", "activation", "maxpool") else 0)
        wr["backward_input"] = e_in * b
    if macs["backward_weight"]:
        rd["backward_weight"] = e_out * b + e_in * b
        wr["backward_weight"] = wb
    if macs["update"]:
        rd["update"] = 2 * wb
        wr["update"] = wb
    return rd, wr


def _layer(node: Node, graph: Graph, frozen: bool, upstream: bool, n: int, b: int) -> LayerWork:
    prim = _primitive(node)
    ins = graph[node.inputs[0]].shape if node.inputs else ()
    if node.op == "getitem":  # one output of a split: its own shape
        ins = ins[node.attrs["index"]]
    ins, outs = _flat(ins), _flat(node.shape)
    params = param_count(node, graph)
    trainable = any(p not in graph.frozen for p in node.params.values())
    macs = node_counts(node, graph, n)
    if frozen:
        macs = {"forward": 0 if node.op == "batchnorm" else macs["forward"],
                "backward_input": 0, "backward_weight": 0, "update": 0}
    else:
        if not upstream:
            macs["backward_input"] = 0   # nothing trainable upstream: no input gradient needed
        if not trainable:
            macs["backward_weight"] = macs["update"] = 0
    e_in = n * sum(graph[x].numel for x in node.inputs)  # a split's outputs: all of them
    e_out = n * node.numel
    rd, wr = _traffic(prim, macs, e_in, e_out, params * b, b)
    if node.op in _VIEWS:
        rd["forward"] = wr["forward"] = 0
    return LayerWork(name=node.name, type=node.module_type or node.op, primitive=prim, frozen=frozen,
                     in_shape=tuple(ins), out_shape=tuple(outs), params=params, geom=_geom(node, graph), macs=macs,
                     bytes_read=rd, bytes_written=wr, scratch_bytes=_scratch(node, graph, prim, frozen, n, b, macs),
                     saved_keys=() if frozen else _saved(node, prim, macs),
                     in_key=node.inputs[0] if node.inputs else "", out_key=node.name)


def _check_args(precision, batch, n_replays, lr_bits, step_batch) -> None:
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


def build_workload(model: nn.Module | Graph, input_shape, latent_layer: str | None = None, precision: str = "fp32",
                   batch: int = 1, n_replays: int = 0, lr_bits: int = 8, step_batch: int | None = None) -> Workload:
    """Count the work of one learning event of ``model`` (an ``nn.Module`` or a captured graph).

    ``latent_layer`` names a node or module of the graph (``tinycl layers`` lists them); the nodes
    up to it are the frozen front. ``step_batch`` (default ``batch``) is the number of samples per
    training step; the frozen forward runs one sample at a time on each of the ``batch`` new samples.
    """
    step_batch = batch if step_batch is None else step_batch
    _check_args(precision, batch, n_replays, lr_bits, step_batch)
    graph = model if isinstance(model, Graph) else capture(model, tuple(int(v) for v in input_shape))
    nodes = graph.compute_nodes()
    if not nodes:
        raise TinyclError("model has no layers to profile")
    cut = -1
    if latent_layer is not None:
        name = graph.resolve(latent_layer)
        if name not in graph.cut_points():
            raise TinyclError(f"cannot split at {latent_layer!r}: other tensors cross it; "
                              f"split points: {', '.join(graph.cut_points()[:8])}...")
        cut = [nd.name for nd in nodes].index(name)
    b_ad = BYTES_PER_ELEMENT[precision]
    layers, tensors, first_use, last_use = [], {}, {graph.input: -1}, {}
    needs = {graph.input: False}
    for i, nd in enumerate(nodes):
        frozen = i <= cut
        n, b = (1, 1) if frozen else (step_batch, b_ad)
        upstream = any(needs.get(x, False) for x in nd.inputs)
        needs[nd.name] = not frozen and (upstream or any(p not in graph.frozen for p in nd.params.values()))
        layers.append(_layer(nd, graph, frozen, upstream, n, b))
        for k in nd.inputs:
            last_use[k] = i
            tensors.setdefault(k, n * graph[k].numel)
        first_use.setdefault(nd.name, i)
        last_use.setdefault(nd.name, i)
        tensors[nd.name] = max(tensors.get(nd.name, 0), n * nd.numel)
    latent_elems = nodes[cut].numel if cut >= 0 else _prod(graph.input_shape)
    return Workload(layers=layers, precision=precision, batch=batch, step_batch=step_batch,
                    n_replays=n_replays, lr_bits=lr_bits, steps=math.ceil((batch + n_replays) / step_batch),
                    latent_layer=latent_layer, latent_elements=latent_elems,
                    input_elements=_prod(graph.input_shape), tensors=tensors, first_use=first_use,
                    last_use=last_use)
