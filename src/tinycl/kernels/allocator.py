"""Keep freed memory in the process: glibc's malloc tuned so that a training step does not page-fault.

Each training step frees its activations and gradients (MBs per tensor on a real model) and
allocates the same sizes again in the next step. With glibc's defaults, blocks above its mmap
threshold go back to the kernel when freed and the top of the heap is trimmed, so the next step
page-faults every page in again: 6,880 minor faults (27 MB) per ResNet-18 step at batch 1 and
2 threads (``bench/page_faults.py``, docs/benchmarks.md). Raising the mmap threshold to its maximum
(32 MiB on 64-bit glibc), the trim threshold to 1 GiB and the top pad to 64 MiB keeps that memory
mapped from one step to the next, at the price of a resident size that stays at the peak.

Process-wide, called once when a :class:`~tinycl.models.network.Network` is built. Other C
libraries (musl, macOS) are left alone. ``TINYCL_MALLOC=default`` keeps glibc's own settings;
glibc's ``MALLOC_*_`` environment variables, when set, are respected the same way.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's <malloc.h>
SETTINGS = ((M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 64 << 20))
_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
_done: bool | None = None


def keep_freed_memory() -> bool:
    """Apply :data:`SETTINGS` through glibc's ``mallopt`` (once per process). Returns whether they
    are in force: False off glibc, with ``TINYCL_MALLOC=default``, or when the user set glibc's
    own ``MALLOC_*_`` variables."""
    global _done
    if _done is None:
        _done = _apply()
    return _done


def _apply() -> bool:
    if os.environ.get("TINYCL_MALLOC", "").strip().lower() == "default" or any(k in os.environ for k in _ENV):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        if not hasattr(libc, "gnu_get_libc_version"):
            return False  # not glibc: its own allocator, its own rules
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in SETTINGS)
