"""Moved to :mod:`tinycl.data.stream` (the Experience and stream types live with the data)."""

from tinycl.data.stream import Experience, class_incremental, make_experience, nic_v2, seen_classes

__all__ = ["Experience", "class_incremental", "make_experience", "nic_v2", "seen_classes"]
