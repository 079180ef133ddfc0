"""What one pass of one layer costs: accesses per memory, register reuse, MACs, cycles, energy.

A pass is one operation the PU is reconfigured for: ``conv_fwd``, ``conv_dx`` (input
gradient, a transposed conv), ``conv_dw`` (weight gradient), ``dense_fwd``, ``dense_dx``,
``dense_dw``, ``relu_fwd``, ``relu_bwd``, ``loss``, ``update`` (SGD), or the control
unit's ``control`` traffic (samples in and out of the rehearsal memory). Counts are in words (``Arch.word_bytes`` each; rehearsal
words are stored pixels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .arch import MEMORIES, Arch

OPS = ("conv_fwd", "conv_dx", "conv_dw", "dense_fwd", "dense_dx", "dense_dw", "relu_fwd", "relu_bwd",
       "loss", "update", "control")


@dataclass
class PassCount:
    """Counts of one pass. ``reg_reads``: window inputs served from the window register
    instead of memory. ``compute_cycles``: MAC-array cycles; ``extra_cycles``: fixed
    sequential work (the loss)."""

    layer: str
    op: str
    order: str = "-"
    reads: dict = field(default_factory=lambda: {m: 0 for m in MEMORIES})
    writes: dict = field(default_factory=lambda: {m: 0 for m in MEMORIES})
    reg_reads: int = 0
    macs: int = 0
    ops: int = 0
    compute_cycles: int = 0
    extra_cycles: int = 0

    def read(self, mem: str, n: int) -> None:
        self.reads[mem] += int(n)

    def write(self, mem: str, n: int) -> None:
        self.writes[mem] += int(n)

    @property
    def total_reads(self) -> int:
        return sum(self.reads.values())

    @property
    def total_writes(self) -> int:
        return sum(self.writes.values())

    def memory_cycles(self, arch: Arch) -> int:
        """Cycles the busiest memory needs for this pass's reads and writes."""
        return max(math.ceil((self.reads[m] + self.writes[m]) / arch.memories[m].words_per_cycle)
                   for m in MEMORIES)

    def cycles(self, arch: Arch) -> int:
        """Compute and memory traffic overlap (double-buffered); plus PU reconfiguration."""
        return max(self.compute_cycles, self.memory_cycles(arch)) + self.extra_cycles + arch.reconfig_cycles

    def energy_j(self, arch: Arch) -> float:
        """Dynamic energy in joules: MACs, elementwise ops, register reads, memory words."""
        pj = self.macs * arch.energy_pj_per_mac + self.ops * arch.energy_pj_per_op
        pj += self.reg_reads * arch.energy_pj_per_register_read
        for m in MEMORIES:
            pj += (self.reads[m] + self.writes[m]) * arch.memories[m].energy_pj_per_word
        return pj * 1e-12

    def key(self) -> tuple:
        return (self.layer, self.op, self.order)

    def as_dict(self, arch: Arch) -> dict:
        return {"layer": self.layer, "op": self.op, "order": self.order, "reads": dict(self.reads),
                "writes": dict(self.writes), "reg_reads": self.reg_reads, "macs": self.macs, "ops": self.ops,
                "cycles": self.cycles(arch), "energy_j": self.energy_j(arch)}

    def same_counts(self, other: "PassCount") -> bool:
        return (self.reads == other.reads and self.writes == other.writes and self.reg_reads == other.reg_reads
                and self.macs == other.macs and self.ops == other.ops and self.compute_cycles == other.compute_cycles
                and self.extra_cycles == other.extra_cycles)


def window_cycles(arch: Arch, pairs: int, k2: int) -> int:
    """MAC-array cycles of one window position holding ``pairs`` (source, target) channel
    pairs of ``k2`` taps each: ``M // k2`` pairs per cycle when a window fits the array,
    else ``ceil(k2 / M)`` cycles per pair."""
    m = arch.mac_units
    if m >= k2:
        return math.ceil(pairs / (m // k2))
    return pairs * math.ceil(k2 / m)


def dot_cycles(arch: Arch, length: int) -> int:
    """Cycles of one dot product of ``length`` terms on the M-input adder tree."""
    return math.ceil(length / arch.mac_units)
