"""The PE-array parameters of the ETA model, read from YAML (``eta-array.yaml`` beside this file)
by the one spec reader (:mod:`tinycl.hw.spec`). Clock and DDR bandwidth are the device's, read
from the target the file names (``target: eta-fpga``).

Units: cycles of ``clock_hz``, bytes, bytes per cycle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tinycl.errors import TinyclError
from tinycl.hw.spec import SpecReader, read_yaml, split_overrides
from tinycl.hw.target import Target, load_target

DEFAULT_FILE = Path(__file__).parent / "eta-array.yaml"
_TOP = {"schema", "name", "target", "array", "noc", "buffer_bytes", "unified_core", "layer_overhead_cycles",
        "training"}
_SECTIONS = {"array": {"clusters", "rows", "cols", "macs_per_pe"}, "noc": {"bytes_per_cycle", "resend_pixels"},
             "unified_core": {"lanes", "master_bytes_per_param"}, "training": {"batch"}}
_INTS = {"array.clusters", "array.rows", "array.cols", "array.macs_per_pe", "unified_core.lanes",
         "unified_core.master_bytes_per_param", "noc.resend_pixels", "training.batch", "buffer_bytes"}


@dataclass(frozen=True)
class ArrayConfig:
    """A hierarchical PE array: ``clusters`` clusters of ``rows x cols`` PEs."""

    name: str
    clock_hz: float
    clusters: int
    rows: int
    cols: int
    macs_per_pe: int
    noc_bytes_per_cycle: float
    dram_bytes_per_cycle: float
    buffer_bytes: int
    core_lanes: int
    master_bytes_per_param: int
    layer_overhead_cycles: float
    resend_pixels: int          # output pixels a cluster keeps the stationary operand for
    batch: int                  # samples per training step the figures assume
    sources: dict = field(default_factory=dict, compare=False)
    params: dict = field(default_factory=dict, compare=False)

    @property
    def pes(self) -> int:
        return self.clusters * self.rows * self.cols

    @property
    def peak_gops(self) -> float:
        """2 ops per MAC x MACs per cycle x clock, in 1e9 ops/s."""
        return 2 * self.pes * self.macs_per_pe * self.clock_hz / 1e9


def _dram_bw(t: Target) -> float:
    bws = [m.bandwidth_bytes_per_cycle for m in t.memory if m.bandwidth_bytes_per_cycle]
    if not bws:
        raise TinyclError(f"target {t.name!r} gives no memory bandwidth for the ETA array's DRAM")
    return bws[-1]


def load_array(path: str | os.PathLike | None = None, target: str | Target | None = None,
               overrides: dict | None = None) -> ArrayConfig:
    """Load an array description (the built-in one when ``path`` is None).

    ``target``: the device file for clock and DDR bandwidth (default: the one the file names);
    ``overrides``: ``{"eta-array:<key>": v, "<target>:<key>": v}`` (see :mod:`tinycl.hw.spec`).
    """
    p = Path(path) if path is not None else DEFAULT_FILE
    data = read_yaml(p)
    r = SpecReader(str(p), "array file", split_overrides(overrides, p.stem))
    r.keys(data, _TOP)
    if data.get("schema") != 1:
        r.fail("schema", "must be 1")
    for sec, allowed in _SECTIONS.items():
        r.keys(r.section(data, sec), allowed, sec)
    if target is None:
        if not isinstance(data.get("target"), str):
            r.fail("target", "must name a target file (clock, DDR bandwidth, power)")
        target = data["target"]
    if not isinstance(target, Target):
        target = load_target(target, split_overrides(overrides, Path(str(target)).stem))
    vals = {}
    for k in ("array.clusters", "array.rows", "array.cols", "array.macs_per_pe", "noc.bytes_per_cycle",
              "noc.resend_pixels", "buffer_bytes", "unified_core.lanes", "unified_core.master_bytes_per_param",
              "layer_overhead_cycles", "training.batch"):
        sec, _, key = k.rpartition(".")
        vals[k] = r.number(data[sec] if sec else data, key, k, integer=k in _INTS)
    r.check_overrides()
    return ArrayConfig(
        name=str(data.get("name", p.stem)), clock_hz=target.clock_hz, clusters=vals["array.clusters"],
        rows=vals["array.rows"], cols=vals["array.cols"], macs_per_pe=vals["array.macs_per_pe"],
        noc_bytes_per_cycle=vals["noc.bytes_per_cycle"], dram_bytes_per_cycle=_dram_bw(target),
        buffer_bytes=vals["buffer_bytes"], core_lanes=vals["unified_core.lanes"],
        master_bytes_per_param=vals["unified_core.master_bytes_per_param"],
        layer_overhead_cycles=vals["layer_overhead_cycles"], resend_pixels=vals["noc.resend_pixels"],
        batch=vals["training.batch"], sources=r.sources, params=r.params)
