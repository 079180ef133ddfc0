"""Closed-form counts of every pass (no walk, no data): what the epoch figures use.

Each function returns the :class:`PassCount` the PU's walked method of the same name
produces on the same shapes (tests/test_accel_tinycl.py proves the equality), in
O(H + W) time instead of O(H x W x K^2 x C^2).
"""

from __future__ import annotations

import math

from tinycl.errors import TinyclError, UnsupportedLayerError
from tinycl.kernels.macs import pair

from .arch import Arch
from .counts import PassCount, dot_cycles, window_cycles
from .window import dense_valid, walk_reads, walk_window_uses

_pair = pair


def _kernel_words(arch, words, positions):
    return words if arch.fits_registers(words) else words * positions


def conv_counts(arch: Arch, op: str, order: str, cin: int, cout: int, h: int, w: int, kh: int, kw: int,
                stride=1, padding=0, bias: bool = True, layer: str = "conv", groups: int = 1) -> PassCount:
    """Counts of ``conv_fwd``, ``conv_dx`` or ``conv_dw`` of one sample."""
    if groups != 1:
        raise UnsupportedLayerError(f"the TinyCL PU models groups=1 convolutions only, got groups={groups}")
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if ho < 1 or wo < 1:
        raise TinyclError(f"conv input {h}x{w} is too small for a {kh}x{kw} kernel with padding {ph},{pw}")
    pc = PassCount(layer, op, order)
    kwords = cout * cin * kh * kw
    if op in ("conv_fwd", "conv_dw"):
        rv, cv = dense_valid(h + 2 * ph, ph, h), dense_valid(w + 2 * pw, pw, w)
        reads = cin * walk_reads(order, rv, cv, ho, wo, kh, kw, sh, sw)
        uses = cin * walk_window_uses(rv, cv, ho, wo, kh, kw, sh, sw)
        pc.read("activations", reads)
        pc.reg_reads = uses - reads
        pc.macs = cout * uses
        pc.compute_cycles = ho * wo * window_cycles(arch, cin * cout, kh * kw)
        if op == "conv_fwd":
            pc.read("weights", _kernel_words(arch, kwords, ho * wo) + (cout if bias else 0))
            pc.write("activations", cout * ho * wo)
            pc.ops = cout * ho * wo if bias else 0
        else:
            words = kwords + (cout if bias else 0)
            pc.read("gradients", cout * ho * wo)
            if not arch.fits_registers(words):
                pc.read("gradients", words * (ho * wo - 1))
                pc.write("gradients", words * (ho * wo - 1))
            pc.write("gradients", words)
            pc.ops = cout * ho * wo if bias else 0
    elif op == "conv_dx":
        rv = dense_valid(h + kh - 1, kh - 1 - ph, ho, sh)
        cv = dense_valid(w + kw - 1, kw - 1 - pw, wo, sw)
        reads = cout * walk_reads(order, rv, cv, h, w, kh, kw, 1, 1)
        uses = cout * walk_window_uses(rv, cv, h, w, kh, kw, 1, 1)
        pc.read("gradients", reads)
        pc.read("weights", _kernel_words(arch, kwords, h * w))
        pc.write("gradients", cin * h * w)
        pc.reg_reads = uses - reads
        pc.macs = cin * uses
        pc.compute_cycles = h * w * window_cycles(arch, cin * cout, kh * kw)
    else:
        raise TinyclError(f"unknown conv pass {op!r}; allowed: conv_fwd, conv_dx, conv_dw")
    return pc


def dense_counts(arch: Arch, op: str, fin: int, fout: int, bias: bool = True, layer: str = "fc") -> PassCount:
    """Counts of ``dense_fwd``, ``dense_dx`` or ``dense_dw`` of one sample."""
    pc = PassCount(layer, op)
    if op == "dense_fwd":
        pc.read("weights", fout * fin + (fout if bias else 0))
        pc.read("activations", fin if arch.fits_registers(fin) else fout * fin)
        pc.write("activations", fout)
        pc.macs, pc.ops = fout * fin, (fout if bias else 0)
        pc.compute_cycles = fout * dot_cycles(arch, fin)
    elif op == "dense_dx":
        pc.read("weights", fout * fin)
        pc.read("gradients", fout if arch.fits_registers(fout) else fout * fin)
        pc.write("gradients", fin)
        pc.macs = fout * fin
        pc.compute_cycles = fin * dot_cycles(arch, fout)
    elif op == "dense_dw":
        if not arch.fits_registers(fout):
            raise TinyclError(f"dense layer {layer!r}: {fout} outputs do not fit the register file "
                              f"({arch.register_file_words} words)")
        pc.read("gradients", fout)
        pc.read("activations", fin)
        pc.write("gradients", fout * fin + (fout if bias else 0))
        pc.macs = fout * fin
        pc.compute_cycles = math.ceil(fout * fin / arch.mac_units)
    else:
        raise TinyclError(f"unknown dense pass {op!r}; allowed: dense_fwd, dense_dx, dense_dw")
    return pc


def relu_counts(arch: Arch, op: str, numel: int, layer: str = "relu") -> PassCount:
    pc = PassCount(layer, op)
    pc.ops = numel
    pc.compute_cycles = math.ceil(numel / arch.mac_units)
    if op == "relu_bwd":
        pc.read("gradients", numel)
        pc.read("activations", numel)
        pc.write("gradients", numel)
    return pc


def loss_counts(arch: Arch, classes: int, layer: str = "loss") -> PassCount:
    pc = PassCount(layer, "loss")
    pc.read("activations", classes)
    pc.write("gradients", classes)
    pc.ops = 4 * classes
    pc.extra_cycles = arch.loss_cycles_per_class * classes
    return pc


def update_counts(arch: Arch, params: int, layer: str = "update") -> PassCount:
    pc = PassCount(layer, "update")
    pc.read("weights", params)
    pc.read("gradients", params)
    pc.write("weights", params)
    pc.macs = params
    pc.compute_cycles = math.ceil(params / arch.mac_units)
    return pc


def control_counts(arch: Arch, sample_words: int, new: bool, inserted: bool, layer: str = "control") -> PassCount:
    """Control-unit traffic of one training step's sample: a new sample is written into the
    activation memory from the sensor stream; a replay is read from the rehearsal memory into
    it. An inserted sample is also written to the rehearsal memory (eviction overwrites a
    slot: no extra access)."""
    pc = PassCount(layer, "control")
    pc.write("activations", sample_words)
    if not new:
        pc.read("rehearsal", sample_words)
    if inserted:
        pc.write("rehearsal", sample_words)
    return pc
