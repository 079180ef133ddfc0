"""tinycl.hw: device targets as data and cost models of on-device learning (latency, energy, memory)."""

from tinycl.hw.cost import learning_event_cost, profile
from tinycl.hw.energy import battery_life_hours
from tinycl.hw.target import list_targets, load_target

__all__ = ["battery_life_hours", "learning_event_cost", "list_targets", "load_target", "profile"]
