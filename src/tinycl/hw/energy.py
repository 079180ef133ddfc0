"""Battery life from the energy of a learning event.

The energy of an event is the pipeline's energy stage (:func:`tinycl.hw.pipeline.stage_energy`):
per access (MACs x pJ/MAC + bytes x pJ/byte of their level, or an accelerator's own counts) plus
idle power x time where the device gives per-access energies, else active power x time.
"""

from __future__ import annotations

from tinycl.errors import TinyclError


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
