"""The TinyCL architecture as data: MAC array, memories, control costs (``tinycl_pu.yaml``).

Every number is ``{value: ..., source: "..."}``, read by the one spec reader (:mod:`tinycl.hw.spec`). Clock and
power are read from the shared target the file names (``target: tinycl-asic``), so the
two stay in one place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tinycl.errors import TinyclError
from tinycl.hw.spec import Param, SpecReader, read_yaml, split_overrides
from tinycl.hw.target import Target, load_target

DEFAULT_FILE = Path(__file__).parent / "tinycl_pu.yaml"
MEMORIES = ("weights", "activations", "gradients", "rehearsal")


@dataclass
class Memory:
    """One on-chip SRAM. Sizes in bytes; bandwidth = ports x port_words words per cycle."""

    name: str
    size_bytes: int
    ports: int
    port_words: int
    energy_pj_per_word: float

    @property
    def words_per_cycle(self) -> int:
        return self.ports * self.port_words


@dataclass
class Arch:
    """The processing unit and control unit. Cycles of ``clock_hz``; energies in pJ."""

    name: str
    clock_hz: float
    active_power_w: float
    idle_power_w: float
    mac_units: int
    word_bytes: int
    register_file_words: int
    energy_pj_per_mac: float
    energy_pj_per_register_read: float
    energy_pj_per_op: float
    reconfig_cycles: int
    loss_cycles_per_class: int
    memories: dict[str, Memory]
    rehearsal_capacity: int
    replays_per_new_sample: int
    target_name: str = ""
    sources: dict[str, str] = field(default_factory=dict)
    params: dict[str, Param] = field(default_factory=dict)
    path: str = ""

    def fits_registers(self, words: int) -> bool:
        return words <= self.register_file_words


_TOP = {"schema", "name", "target", "mac_units", "word_bytes", "register_file_words", "energy_pj_per_mac",
        "energy_pj_per_register_read", "energy_pj_per_op", "reconfig_cycles", "loss_cycles_per_class",
        "memories", "rehearsal"}
_MEM = {"name", "size_bytes", "ports", "port_words", "energy_pj_per_word"}


def parse_arch(data, where: str = "<dict>", target: Target | None = None, overrides: dict | None = None) -> Arch:
    """Check a parsed architecture mapping and build an :class:`Arch` (``overrides``: dotted key -> value)."""
    r = SpecReader(where, "architecture file", overrides)
    if not isinstance(data, dict):
        raise TinyclError(f"architecture file {where}: top level must be a mapping")
    r.keys(data, _TOP)
    if data.get("schema") != 1:
        r.fail("schema", "must be 1")
    if target is None:
        tname = data.get("target")
        if not isinstance(tname, str):
            r.fail("target", "must name a target file")
        target = load_target(tname)
    mems = data.get("memories")
    if not isinstance(mems, list):
        r.fail("memories", "must be a list")
    memories = {}
    for m in mems:
        name = m.get("name") if isinstance(m, dict) else None
        if name not in MEMORIES:
            r.fail("memories", f"memory name {name!r} is not one of {', '.join(MEMORIES)}")
        r.keys(m, _MEM, f"memories.{name}")
        k = f"memories.{name}"
        memories[name] = Memory(name, r.number(m, "size_bytes", f"{k}.size_bytes", integer=True),
                                r.number(m, "ports", f"{k}.ports", integer=True),
                                r.number(m, "port_words", f"{k}.port_words", integer=True),
                                r.number(m, "energy_pj_per_word", f"{k}.energy_pj_per_word", positive=False))
    missing = [n for n in MEMORIES if n not in memories]
    if missing:
        r.fail("memories", f"misses: {', '.join(missing)}")
    reh = r.section(data, "rehearsal")
    r.keys(reh, {"capacity_samples", "replays_per_new_sample", "policy"}, "rehearsal")
    if reh.get("policy", "reservoir") != "reservoir":
        r.fail("rehearsal.policy", f"{reh.get('policy')!r} is not supported (allowed: reservoir)")

    def num(key, integer=True, positive=True):
        return r.number(data, key, key, integer=integer, positive=positive)

    arch = Arch(
        name=str(data.get("name", "tinycl-pu")), clock_hz=target.clock_hz,
        active_power_w=target.active_power_w, idle_power_w=target.idle_power_w,
        mac_units=num("mac_units"), word_bytes=num("word_bytes"),
        register_file_words=num("register_file_words", positive=False),
        energy_pj_per_mac=num("energy_pj_per_mac", False, False),
        energy_pj_per_register_read=num("energy_pj_per_register_read", False, False),
        energy_pj_per_op=num("energy_pj_per_op", False, False),
        reconfig_cycles=num("reconfig_cycles", positive=False),
        loss_cycles_per_class=num("loss_cycles_per_class", positive=False),
        memories=memories,
        rehearsal_capacity=r.number(reh, "capacity_samples", "rehearsal.capacity_samples", integer=True),
        replays_per_new_sample=r.number(reh, "replays_per_new_sample", "rehearsal.replays_per_new_sample",
                                        integer=True, positive=False),
        target_name=target.name, sources=r.sources, params=r.params, path=where)
    r.check_overrides()
    return arch


def load_arch(path: str | os.PathLike | None = None, target: str | os.PathLike | Target | None = None,
              overrides: dict | None = None) -> Arch:
    """Load the architecture YAML (default: the built-in ``tinycl_pu.yaml``).

    ``target`` overrides the shared target file the YAML names (clock and power);
    ``overrides``: ``{"tinycl_pu:<key>": v, "<target>:<key>": v}`` (see :mod:`tinycl.hw.spec`).
    """
    p = Path(path) if path is not None else DEFAULT_FILE
    if not p.is_file():
        raise TinyclError(f"architecture file not found: {p}")
    data = read_yaml(p)
    if target is None and isinstance(data, dict) and isinstance(data.get("target"), str):
        target = data["target"]
    if target is not None and not isinstance(target, Target):
        target = load_target(target, split_overrides(overrides, Path(str(target)).stem))
    return parse_arch(data, str(p), target, split_overrides(overrides, p.stem))
