"""The PE-array parameters of the ETA model, read from YAML (``eta-array.yaml`` beside this file).

Every number is ``{value: ..., source: "datasheet: ..." | "assumption: ..." | "calibrated: ..."}``.
Units: cycles of ``clock_hz``, bytes, bytes per cycle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tinycl.errors import TinyclError

DEFAULT_FILE = Path(__file__).parent / "eta-array.yaml"
_KEYS = ("clock_hz", "array.clusters", "array.rows", "array.cols", "array.macs_per_pe", "noc.bytes_per_cycle",
         "dram.bytes_per_cycle", "buffer_bytes", "unified_core.lanes", "unified_core.master_bytes_per_param",
         "layer_overhead_cycles")


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
    sources: dict = field(default_factory=dict, compare=False)

    @property
    def pes(self) -> int:
        return self.clusters * self.rows * self.cols

    @property
    def peak_gops(self) -> float:
        """2 ops per MAC x MACs per cycle x clock, in 1e9 ops/s."""
        return 2 * self.pes * self.macs_per_pe * self.clock_hz / 1e9


def _get(data: dict, dotted: str, where: str):
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise TinyclError(f"{where}: missing '{dotted}'")
        node = node[part]
    if not isinstance(node, dict) or "value" not in node or "source" not in node:
        raise TinyclError(f"{where}: '{dotted}' must be {{value: ..., source: ...}}")
    v = node["value"]
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
        raise TinyclError(f"{where}: '{dotted}' must be a positive number, got {v!r}")
    return v, str(node["source"])


def load_array(path: str | os.PathLike | None = None) -> ArrayConfig:
    """Load an array description (the built-in one when ``path`` is None)."""
    p = Path(path) if path is not None else DEFAULT_FILE
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise TinyclError(f"cannot read array file {str(p)!r}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise TinyclError(f"array file {str(p)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise TinyclError(f"array file {str(p)!r} must hold a mapping")
    vals, srcs = {}, {}
    for k in _KEYS:
        vals[k], srcs[k] = _get(data, k, str(p))
    ints = ("array.clusters", "array.rows", "array.cols", "array.macs_per_pe", "unified_core.lanes")
    for k in ints:
        if int(vals[k]) != vals[k]:
            raise TinyclError(f"{p}: '{k}' must be an integer, got {vals[k]!r}")
    return ArrayConfig(
        name=str(data.get("name", p.stem)), clock_hz=float(vals["clock_hz"]), clusters=int(vals["array.clusters"]),
        rows=int(vals["array.rows"]), cols=int(vals["array.cols"]), macs_per_pe=int(vals["array.macs_per_pe"]),
        noc_bytes_per_cycle=float(vals["noc.bytes_per_cycle"]), dram_bytes_per_cycle=float(vals["dram.bytes_per_cycle"]),
        buffer_bytes=int(vals["buffer_bytes"]), core_lanes=int(vals["unified_core.lanes"]),
        master_bytes_per_param=int(vals["unified_core.master_bytes_per_param"]),
        layer_overhead_cycles=float(vals["layer_overhead_cycles"]), sources=srcs)
