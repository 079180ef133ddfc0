"""Device targets as data: the YAML schema, its loader and its checks.

A target file describes one device (see ``docs/targets.md``), read by :mod:`tinycl.hw.spec`:
every number names its source (an assumption with its range, a calibrated number with the
figure it was fitted to).
Built-in targets live beside this module in ``targets/*.yaml``; a user's own file is
accepted by path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tinycl.errors import TinyclError
from tinycl.hw.pulp_kernels import DwKernel, GemmKernel
from tinycl.hw.spec import SOURCE_TAGS, Param  # noqa: F401  (SOURCE_TAGS re-exported)
from tinycl.hw.spec import SpecReader, read_yaml, resolve

TARGET_DIR = Path(__file__).parent / "targets"
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}
STEPS = ("forward", "backward_input", "backward_weight")
PRIMITIVES = ("conv", "pointwise", "depthwise", "linear")
KINDS = ("tiled", "flat")


@dataclass
class MemoryLevel:
    """One memory of the target, innermost first. Sizes in bytes, bandwidth in bytes/cycle."""

    name: str
    size_bytes: int
    scratchpad: bool = False          # only holds tiles (PULP L1); planner puts no whole tensors here
    writable: bool = True             # False for flash: only frozen, read-only tensors may live here
    bandwidth_bytes_per_cycle: float | None = None  # what this level delivers inward (DMA or compute)
    energy_pj_per_byte: float | None = None


@dataclass
class Target:
    """A device, loaded from YAML. Times in cycles of ``clock_hz``; power in watts."""

    name: str
    description: str
    kind: str
    clock_hz: float
    cores: int
    precisions: tuple[str, ...]
    memory: list[MemoryLevel]
    efficiency: dict[tuple[str, str], dict[str, float]]   # (precision, primitive) -> step -> MAC/cycle
    elementwise_ops_per_cycle: dict[str, float]           # precision -> ops/cycle (BN, act, pool, update)
    copy_elements_per_cycle: float                        # im2col / transpose copies, elements/cycle
    layer_overhead_cycles: float
    tile_overhead_cycles: float
    active_power_w: float
    idle_power_w: float
    energy_pj_per_mac: dict[str, float] = field(default_factory=dict)
    gemm: dict[str, GemmKernel] = field(default_factory=dict)        # precision -> shape-aware matmul
    dw_kernel: dict[str, DwKernel] = field(default_factory=dict)     # precision -> shape-aware depthwise
    step_overhead_cycles: float = 0.0     # per training step (host / framework time), cycles
    accelerator: str | None = None        # eta-array | tinycl-pu: the mapping is that accelerator's model
    params: dict[str, Param] = field(default_factory=dict)   # dotted key -> tagged number
    sources: dict[str, str] = field(default_factory=dict)  # dotted key -> source text
    path: str = ""

    def level(self, name: str) -> MemoryLevel:
        for m in self.memory:
            if m.name == name:
                return m
        raise TinyclError(f"target {self.name!r} has no memory level {name!r}")

    def macs_per_cycle(self, precision: str, primitive: str, step: str) -> float:
        """MAC/cycle of the matmul (or depthwise) kernel of one primitive step."""
        row = self.efficiency.get((precision, primitive))
        if row is None:   # a primitive without its own row runs at the conv row's rate
            row = self.efficiency.get((precision, "conv"))
        if row is None or step not in row:
            raise TinyclError(f"target {self.name!r} has no efficiency row for "
                              f"precision {precision!r}, primitive {primitive!r}, step {step!r}")
        return row[step]


def list_targets() -> list[str]:
    """Names of the built-in targets."""
    return sorted(p.stem for p in TARGET_DIR.glob("*.yaml"))


def load_target(name_or_path: str | os.PathLike, overrides: dict | None = None) -> Target:
    """Load a built-in target by name, or a user's YAML file by path.

    ``overrides``: dotted key -> value (a factor for an efficiency row), see :mod:`tinycl.hw.spec`.
    """
    path = resolve(name_or_path, TARGET_DIR, "target", list_targets())
    return parse_target(read_yaml(path), str(path), overrides)


_TOP_KEYS = {"schema", "name", "description", "kind", "accelerator", "clock_hz", "cores", "precisions", "memory",
             "efficiency", "elementwise_ops_per_cycle", "copy_elements_per_cycle", "overheads",
             "power", "energy_pj_per_mac", "gemm", "depthwise_kernel", "notes"}
_RATE_KEYS = ("efficiency", "elementwise_ops_per_cycle", "copy_elements_per_cycle", "gemm", "depthwise_kernel")
ACCELERATORS = ("eta-array", "tinycl-pu")
_MEM_KEYS = {"name", "size_bytes", "scratchpad", "writable", "bandwidth_bytes_per_cycle", "bandwidth_bytes_per_s",
             "energy_pj_per_byte"}
_ROW_KEYS = {"precision", "primitive", "cores", "forward", "backward_input", "backward_weight", "source", "range",
             "fitted_to"}
_GEMM_KEYS = ("unroll_rows", "unroll_cols", "simd", "k_step_cycles", "block_cycles", "leftover_mac_cycles",
              "leftover_output_cycles")
_GEMM_INTS = ("unroll_rows", "unroll_cols", "simd")
_DW_KEYS = ("mac_cycles", "pixel_cycles")


def parse_target(data, where: str = "<dict>", overrides: dict | None = None) -> Target:
    """Check a parsed target mapping against the schema and build a :class:`Target`."""
    r = SpecReader(where, "target file", overrides)
    name, kind, accel, precisions = _header(r, data, where)
    clock = r.number(data, "clock_hz", "clock_hz")
    cores = r.number(data, "cores", "cores", integer=True)
    memory = _memory(r, data, clock)
    if kind == "tiled" and not memory[0].scratchpad:
        r.fail("memory[0].scratchpad", "must be true for a tiled target (the L1 the tiler fills)")
    ov = r.section(data, "overheads", required=accel is None)
    if accel is not None:     # one device, one model: the accelerator's file holds its rates
        for k in _RATE_KEYS:
            if k in data:
                r.fail(k, f"is not used by a target with accelerator {accel!r} (its model reads "
                          f"its own file); remove it")
        r.keys(ov, {"step_cycles"}, "overheads")
        eff, gemm, dwk, ew, copy, layer_ov, tile_ov = {}, {}, {}, {}, 0.0, 0.0, 0.0
    else:
        eff = _efficiency(r, data, cores)
        gemm = _kernel_section(r, data, "gemm", _GEMM_KEYS, GemmKernel)
        dwk = _kernel_section(r, data, "depthwise_kernel", _DW_KEYS, DwKernel)
        for p in precisions:
            if (p, "conv") not in eff and p not in gemm:
                r.fail("efficiency", f"has no 'conv' row (and no 'gemm' entry) for supported precision {p!r}")
        ew_sec = r.section(data, "elementwise_ops_per_cycle")
        ew = {p: r.number(ew_sec, p, f"elementwise_ops_per_cycle.{p}") for p in ew_sec}
        for p in precisions:
            if p not in ew:
                r.fail(f"elementwise_ops_per_cycle.{p}", "is missing for a supported precision")
        copy = r.number(data, "copy_elements_per_cycle", "copy_elements_per_cycle")
        r.keys(ov, {"layer_cycles", "tile_cycles", "step_cycles"}, "overheads")
        layer_ov = r.number(ov, "layer_cycles", "overheads.layer_cycles", positive=False)
        tile_ov = r.number(ov, "tile_cycles", "overheads.tile_cycles", positive=False)
    step_ov = r.number(ov, "step_cycles", "overheads.step_cycles", positive=False, required=False) or 0.0
    pw = r.section(data, "power")
    r.keys(pw, {"active_w", "idle_w"}, "power")
    active = r.number(pw, "active_w", "power.active_w")
    idle = r.number(pw, "idle_w", "power.idle_w", positive=False)
    e_sec = r.section(data, "energy_pj_per_mac", required=False)
    e_mac = {p: r.number(e_sec, p, f"energy_pj_per_mac.{p}") for p in e_sec}
    for m in memory:
        if m.energy_pj_per_byte is not None and not e_mac:
            r.fail(f"memory.{m.name}.energy_pj_per_byte", "is used only with 'energy_pj_per_mac' (per-access "
                   "energy); without it energy is active power x time: give both or neither")
    r.check_overrides()
    return Target(name=name, description=str(data.get("description", "")), kind=kind, clock_hz=clock,
                  cores=int(cores), precisions=tuple(precisions), memory=memory, efficiency=eff,
                  elementwise_ops_per_cycle=ew, copy_elements_per_cycle=copy,
                  layer_overhead_cycles=layer_ov, tile_overhead_cycles=tile_ov,
                  active_power_w=active, idle_power_w=idle, energy_pj_per_mac=e_mac,
                  gemm=gemm, dw_kernel=dwk, step_overhead_cycles=step_ov, accelerator=accel,
                  params=r.params, sources=r.sources, path=where)


def _header(r: SpecReader, data, where: str) -> tuple:
    """(name, kind, accelerator, precisions), checked."""
    if not isinstance(data, dict):
        raise TinyclError(f"target file {where}: top level must be a mapping")
    r.keys(data, _TOP_KEYS)
    if data.get("schema") != 1:
        r.fail("schema", "must be 1")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        r.fail("name", "must be a non-empty string")
    kind = data.get("kind")
    if kind not in KINDS:
        r.fail("kind", f"must be one of {', '.join(KINDS)}")
    accel = data.get("accelerator")
    if accel is not None and accel not in ACCELERATORS:
        r.fail("accelerator", f"must be one of {', '.join(ACCELERATORS)}")
    precisions = data.get("precisions")
    if not isinstance(precisions, list) or not precisions or any(p not in PRECISIONS for p in precisions):
        r.fail("precisions", f"must be a list drawn from {', '.join(PRECISIONS)}")
    return name, kind, accel, precisions


def _memory(r: SpecReader, data: dict, clock: float) -> list[MemoryLevel]:
    mem_list = data.get("memory")
    if not isinstance(mem_list, list) or not mem_list:
        r.fail("memory", "must be a non-empty list of levels, innermost first")
    memory = []
    for i, m in enumerate(mem_list):
        key = f"memory[{i}]"
        if not isinstance(m, dict) or not isinstance(m.get("name"), str):
            r.fail(key, "must be a mapping with a 'name'")
        for k in m:
            if k not in _MEM_KEYS:
                r.fail(f"{key}.{k}", "is not a memory-level key")
        mk = f"memory.{m['name']}"
        bw = r.number(m, "bandwidth_bytes_per_cycle", f"{mk}.bandwidth_bytes_per_cycle", required=False)
        if "bandwidth_bytes_per_s" in m:     # a published B/s follows the clock (sensitivity moves the clock)
            if bw is not None:
                r.fail(f"{mk}.bandwidth_bytes_per_s", "and bandwidth_bytes_per_cycle: give one of the two")
            bw = r.number(m, "bandwidth_bytes_per_s", f"{mk}.bandwidth_bytes_per_s") / clock
        memory.append(MemoryLevel(
            name=m["name"],
            size_bytes=int(r.number(m, "size_bytes", f"{mk}.size_bytes")),
            scratchpad=bool(m.get("scratchpad", False)),
            writable=bool(m.get("writable", True)),
            bandwidth_bytes_per_cycle=bw,
            energy_pj_per_byte=r.number(m, "energy_pj_per_byte", f"{mk}.energy_pj_per_byte",
                                        positive=False, required=False),
        ))
    return memory


def _efficiency(r: SpecReader, data: dict, cores: int) -> dict:
    rows = data.get("efficiency")
    if not isinstance(rows, list) or not rows:
        r.fail("efficiency", "must be a non-empty list of rows")
    eff: dict[tuple[str, str], dict[str, float]] = {}
    for i, row in enumerate(rows):
        key = f"efficiency[{i}]"
        if not isinstance(row, dict):
            r.fail(key, "must be a mapping")
        for k in row:
            if k not in _ROW_KEYS:
                r.fail(f"{key}.{k}", f"is not an efficiency-row key (allowed: {', '.join(sorted(_ROW_KEYS))})")
        p, prim = row.get("precision"), row.get("primitive")
        if p not in PRECISIONS:
            r.fail(f"{key}.precision", f"must be one of {', '.join(PRECISIONS)}")
        if prim not in PRIMITIVES:
            r.fail(f"{key}.primitive", f"must be one of {', '.join(PRIMITIVES)}")
        if row.get("cores") != int(cores):
            r.fail(f"{key}.cores", f"must equal the target's cores ({int(cores)}): "
                                   "the table is stated at the core count the target runs")
        steps = {}
        for s in STEPS:
            v = row.get(s)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                r.fail(f"{key}.{s}", f"must be a MAC/cycle number > 0, got {v!r}")
            steps[s] = float(v)
        f = r.row_factor(row, f"efficiency.{p}.{prim}", f"{key}.source")
        eff[(p, prim)] = {s: v * f for s, v in steps.items()}
    return eff


def _kernel_section(r: SpecReader, data: dict, key: str, fields: tuple, cls) -> dict:
    """Optional per-precision kernel parameters (``gemm``, ``depthwise_kernel``): each a sourced number."""
    sec = r.section(data, key, required=False)
    out = {}
    for p, entry in sec.items():
        if p not in PRECISIONS:
            r.fail(f"{key}.{p}", f"is not a precision ({', '.join(PRECISIONS)})")
        if not isinstance(entry, dict):
            r.fail(f"{key}.{p}", "must be a mapping")
        for k in entry:
            if k not in fields:
                r.fail(f"{key}.{p}.{k}", f"is not a {key} key (allowed: {', '.join(fields)})")
        vals = {f: r.number(entry, f, f"{key}.{p}.{f}", integer=f in _GEMM_INTS,
                            positive=f not in ("block_cycles", "pixel_cycles", "leftover_output_cycles"))
                for f in fields}
        out[p] = cls(**vals)
    return out
