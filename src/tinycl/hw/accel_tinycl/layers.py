"""The PU passes of one workload layer (one sample): the TinyCL mapping of the cost pipeline.

Conv, pointwise and linear layers and ReLU use the PU's closed forms (:mod:`.cost`), the same
ones :func:`.control.step_counts` uses, so ``tinycl profile`` on ``tinycl-asic`` and
``tinycl accel tinycl`` give the same cycles. Layers the PU paper does not describe
(BatchNorm, pooling, residual add, other activations) run, as an **assumption**, on the
reconfigured MAC units like ReLU: ``mac_units`` operations per cycle, with tinycl's operation
counts (``hw/workload.py``), reading their inputs from and writing their outputs to the
activation (forward) or gradient (backward) memory. Grouped and depthwise convs are not modelled.
"""

from __future__ import annotations

import math

from tinycl.errors import TinyclError

from .arch import Arch
from .cost import conv_counts, dense_counts, relu_counts
from .counts import PassCount

_CONV = ("conv", "pointwise")
_ELEMENTWISE = ("batchnorm", "activation", "maxpool", "avgpool", "add")


def _per_sample(v: int, n: int) -> int:
    return v // n if n else v


def _elementwise(arch: Arch, name: str, op: str, ops: int, reads: dict, writes: dict) -> PassCount:
    pc = PassCount(name, op)
    pc.ops = ops
    pc.compute_cycles = math.ceil(ops / arch.mac_units)
    for m, n in reads.items():
        pc.read(m, n)
    for m, n in writes.items():
        pc.write(m, n)
    return pc


def layer_passes(arch: Arch, l, padding: int, order: str = "snake", step_batch: int = 1) -> dict:
    """``{step: PassCount}`` of one sample of layer ``l`` (a ``LayerWork`` whose MACs are per step of
    ``step_batch`` samples, or of one sample when frozen); empty for a reshape."""
    n = 1 if l.frozen else step_batch
    macs = {k: _per_sample(v, n) for k, v in l.macs.items()}
    bias = l.params > (l.geom.get("cin", 0) * l.geom.get("cout", 0) * l.geom.get("kh", 1) * l.geom.get("kw", 1)
                       // max(1, l.geom.get("groups", 1)))
    out = {}
    if l.primitive in _CONV or l.primitive == "depthwise":
        g = l.geom
        if g["groups"] != 1:
            raise TinyclError(f"layer {l.name!r}: the TinyCL PU models groups=1 convolutions only "
                              f"(groups={g['groups']}); use another target")
        args = (g["cin"], g["cout"], l.in_shape[1], l.in_shape[2], g["kh"], g["kw"], g["stride"], padding)
        out["forward"] = conv_counts(arch, "conv_fwd", order, *args, bias=bias, layer=l.name)
        if macs["backward_input"]:
            out["backward_input"] = conv_counts(arch, "conv_dx", order, *args, layer=l.name)
        if macs["backward_weight"]:
            out["backward_weight"] = conv_counts(arch, "conv_dw", order, *args, bias=bias, layer=l.name)
    elif l.primitive == "linear":
        if len(l.in_shape) != 1:
            raise TinyclError(f"layer {l.name!r}: the TinyCL PU models dense layers on flat inputs only")
        fin, fout = l.geom["cin"], l.geom["cout"]
        out["forward"] = dense_counts(arch, "dense_fwd", fin, fout, bias, l.name)
        if macs["backward_input"]:
            out["backward_input"] = dense_counts(arch, "dense_dx", fin, fout, layer=l.name)
        if macs["backward_weight"]:
            out["backward_weight"] = dense_counts(arch, "dense_dw", fin, fout, bias, l.name)
    elif l.primitive == "activation" and l.type == "ReLU":
        numel = math.prod(l.in_shape)
        out["forward"] = relu_counts(arch, "relu_fwd", numel, l.name)
        if macs["backward_input"]:
            out["backward_input"] = relu_counts(arch, "relu_bwd", numel, l.name)
    elif l.primitive in _ELEMENTWISE:
        e_in, e_out = math.prod(l.in_shape), math.prod(l.out_shape)
        if macs["forward"]:
            out["forward"] = _elementwise(arch, l.name, "elementwise_fwd", macs["forward"], {"activations": e_in},
                                          {"activations": e_out})
        if macs["backward_input"]:
            out["backward_input"] = _elementwise(arch, l.name, "elementwise_bwd", macs["backward_input"],
                                                 {"gradients": e_out, "activations": e_in}, {"gradients": e_in})
        if macs["backward_weight"]:
            out["backward_weight"] = _elementwise(arch, l.name, "elementwise_dw", macs["backward_weight"],
                                                  {"gradients": e_out, "activations": e_in},
                                                  {"gradients": l.params})
    elif l.primitive != "reshape":
        raise TinyclError(f"layer {l.name!r} ({l.type}) has no TinyCL PU mapping")
    return out
