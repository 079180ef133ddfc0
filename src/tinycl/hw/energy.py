"""Energy of a learning event and battery life.

Two models, chosen by what the target file gives:
- power x time: ``active_w * latency`` (joules) -- all built-in targets;
- per operation: ``MACs * pJ/MAC + bytes * pJ/byte of their memory level + idle_w * latency``,
  when the target lists ``energy_pj_per_mac`` for the precision.
"""

from __future__ import annotations

from tinycl.errors import TinyclError
from tinycl.hw.target import Target


def step_energy_j(target: Target, precision: str, latency_s: float, macs: int = 0,
                  bytes_by_level: dict | None = None) -> float:
    """Energy in joules of work that takes ``latency_s`` seconds on ``target``."""
    if precision in target.energy_pj_per_mac:
        e = macs * target.energy_pj_per_mac[precision] * 1e-12
        for name, nbytes in (bytes_by_level or {}).items():
            pj = target.level(name).energy_pj_per_byte or 0.0
            e += nbytes * pj * 1e-12
        return e + target.idle_power_w * latency_s
    return target.active_power_w * latency_s


def battery_life_hours(event_energy_j: float, events_per_minute: float, capacity_mah: float,
                       voltage_v: float, idle_power_w: float = 0.0, event_latency_s: float = 0.0) -> float:
    """Hours a battery lasts when one learning event runs ``events_per_minute`` times a minute.

    Average power = event energy x events per second + idle power for the rest of the time;
    battery energy = capacity (mAh) / 1000 x voltage x 3600 joules.
    """
    if capacity_mah <= 0 or voltage_v <= 0 or events_per_minute < 0:
        raise TinyclError("battery capacity and voltage must be > 0 and events per minute >= 0")
    rate = events_per_minute / 60.0
    busy = min(1.0, rate * event_latency_s)
    p_avg = event_energy_j * rate + idle_power_w * (1.0 - busy)
    if p_avg <= 0:
        raise TinyclError("average power is zero: give an event energy or an idle power")
    return capacity_mah / 1000.0 * voltage_v * 3600.0 / p_avg / 3600.0
