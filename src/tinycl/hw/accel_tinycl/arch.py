"""The TinyCL architecture as data: MAC array, memories, control costs (``tinycl_pu.yaml``).

Every number is ``{value: ..., source: "..."}`` as in the shared target files. Clock and
power are read from the shared target the file names (``target: tinycl-asic``), so the
two stay in one place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tinycl.errors import TinyclError
from tinycl.hw.target import SOURCE_TAGS, Target, load_target

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
    path: str = ""

    def fits_registers(self, words: int) -> bool:
        return words <= self.register_file_words


def _num(d: dict, key: str, where: str, sources: dict, integer: bool = False, minimum: float = 0.0):
    item = d.get(key) if isinstance(d, dict) else None
    if not isinstance(item, dict) or "value" not in item:
        raise TinyclError(f"architecture file {where}: key {key!r} must be {{value: <number>, source: <text>}}")
    v, src = item["value"], item.get("source")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < minimum:
        raise TinyclError(f"architecture file {where}: key {key!r} must be a number >= {minimum}, got {v!r}")
    if integer and int(v) != v:
        raise TinyclError(f"architecture file {where}: key {key!r} must be a whole number, got {v!r}")
    if not isinstance(src, str) or not src.strip().lower().startswith(SOURCE_TAGS):
        raise TinyclError(f"architecture file {where}: key {key!r} needs a 'source' starting with "
                          f"one of {', '.join(SOURCE_TAGS)}")
    sources[key] = src.strip()
    return int(v) if integer else float(v)


def parse_arch(data, where: str = "<dict>", target: Target | None = None) -> Arch:
    """Check a parsed architecture mapping and build an :class:`Arch`."""
    if not isinstance(data, dict):
        raise TinyclError(f"architecture file {where}: top level must be a mapping")
    if data.get("schema") != 1:
        raise TinyclError(f"architecture file {where}: key 'schema' must be 1")
    src: dict[str, str] = {}
    if target is None:
        tname = data.get("target")
        if not isinstance(tname, str):
            raise TinyclError(f"architecture file {where}: key 'target' must name a target file")
        target = load_target(tname)
    mems = data.get("memories")
    if not isinstance(mems, list):
        raise TinyclError(f"architecture file {where}: key 'memories' must be a list")
    memories = {}
    for m in mems:
        name = m.get("name") if isinstance(m, dict) else None
        if name not in MEMORIES:
            raise TinyclError(f"architecture file {where}: memory name {name!r} is not one of {', '.join(MEMORIES)}")
        ms: dict[str, str] = {}
        memories[name] = Memory(name, _num(m, "size_bytes", where, ms, True, 1),
                                _num(m, "ports", where, ms, True, 1), _num(m, "port_words", where, ms, True, 1),
                                _num(m, "energy_pj_per_word", where, ms))
        src.update({f"memories.{name}.{k}": v for k, v in ms.items()})
    missing = [n for n in MEMORIES if n not in memories]
    if missing:
        raise TinyclError(f"architecture file {where}: memories missing: {', '.join(missing)}")
    reh = data.get("rehearsal") or {}
    if reh.get("policy", "reservoir") != "reservoir":
        raise TinyclError(f"architecture file {where}: rehearsal policy {reh.get('policy')!r} is not supported "
                          "(allowed: reservoir)")
    return Arch(
        name=str(data.get("name", "tinycl-pu")), clock_hz=target.clock_hz,
        active_power_w=target.active_power_w, idle_power_w=target.idle_power_w,
        mac_units=_num(data, "mac_units", where, src, True, 1),
        word_bytes=_num(data, "word_bytes", where, src, True, 1),
        register_file_words=_num(data, "register_file_words", where, src, True),
        energy_pj_per_mac=_num(data, "energy_pj_per_mac", where, src),
        energy_pj_per_register_read=_num(data, "energy_pj_per_register_read", where, src),
        energy_pj_per_op=_num(data, "energy_pj_per_op", where, src),
        reconfig_cycles=_num(data, "reconfig_cycles", where, src, True),
        loss_cycles_per_class=_num(data, "loss_cycles_per_class", where, src, True),
        memories=memories,
        rehearsal_capacity=_num(reh, "capacity_samples", where, src, True, 1),
        replays_per_new_sample=_num(reh, "replays_per_new_sample", where, src, True),
        target_name=target.name, sources=src, path=where)


def load_arch(path: str | os.PathLike | None = None, target: str | os.PathLike | None = None) -> Arch:
    """Load the architecture YAML (default: the built-in ``tinycl_pu.yaml``).

    ``target`` overrides the shared target file the YAML names (clock and power).
    """
    p = Path(path) if path is not None else DEFAULT_FILE
    if not p.is_file():
        raise TinyclError(f"architecture file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise TinyclError(f"architecture file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    return parse_arch(data, str(p), load_target(target) if target is not None else None)
