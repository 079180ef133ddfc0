"""Content-addressed on-disk cache of computed arrays (decoded image folders, INT8 latents).

Folder: ``$TINYCL_CACHE``, else ``~/.cache/tinycl``; ``TINYCL_CACHE=off`` turns the cache off.
An entry is ``<folder>/<kind>/<key>.npz``: the key is a SHA-256 over everything the arrays
depend on (see :func:`digest`), so a changed input is a different key, never a stale hit.
Each entry also stores the SHA-256 of its own arrays; an entry that cannot be read or does not
match its checksum is deleted and recomputed, not trusted. Writes go to a temporary file in
the same folder and are renamed into place, so a concurrent reader never sees half an entry.
A cache that cannot be written (read-only disk, disk full) only costs the recomputation.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

_CHECK = "__sha256__"
MIN_ITEMS = 1000  # smaller inputs (a few files or images) are cheap to recompute: not cached
MAX_BYTES_PER_KIND = 4 << 30  # oldest entries of a kind are removed above this ($TINYCL_CACHE_MAX_GB)


def cache_root() -> Path | None:
    """The cache folder, or None when ``TINYCL_CACHE`` is ``off`` (or ``0``, ``none``)."""
    env = os.environ.get("TINYCL_CACHE")
    if env is not None and env.strip().lower() in ("off", "0", "none", "false"):
        return None
    return Path(env) if env else Path.home() / ".cache" / "tinycl"


def _c_order(a: np.ndarray) -> np.ndarray:
    """C-ordered ``a`` with its shape (``np.ascontiguousarray`` turns 0-d into 1-d)."""
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _feed(h, obj) -> None:
    """Add a canonical encoding of ``obj`` to the hash ``h`` (type tags keep kinds apart)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, np.ndarray):
        a = _c_order(obj)
        h.update(f"A{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        h.update(b"B%d:" % len(obj))
        h.update(bytes(obj))
    elif isinstance(obj, dict):
        h.update(b"D%d:" % len(obj))
        for k in sorted(obj, key=str):
            _feed(h, str(k))
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(b"L%d:" % len(obj))
        for v in obj:
            _feed(h, v)
    elif obj is None or isinstance(obj, (str, int, float, bool, Path)):
        s = repr(obj) if not isinstance(obj, Path) else str(obj)
        h.update(f"S{type(obj).__name__}{len(s)}:{s}".encode())
    else:
        raise TypeError(f"cache key: cannot hash a {type(obj).__name__}")


def digest(*parts) -> str:
    """SHA-256 hex digest of ``parts``: tensors and arrays by dtype, shape and bytes; dicts,
    lists, tuples, strings and numbers by value."""
    h = hashlib.sha256()
    _feed(h, list(parts))
    return h.hexdigest()


def source_digest(*modules) -> str:
    """Digest of the source code of ``modules``: a cache key part that changes with the code."""
    return digest([inspect.getsource(m) for m in modules])


def _arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    return digest({k: v for k, v in arrays.items() if k != _CHECK})


def entry_path(kind: str, key: str) -> Path | None:
    root = cache_root()
    return None if root is None else root / kind / f"{key}.npz"


def load(kind: str, key: str) -> dict[str, np.ndarray] | None:
    """The arrays stored under ``(kind, key)``, or None (absent, cache off, or damaged: then
    the entry is removed)."""
    path = entry_path(kind, key)
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if _CHECK in arrays and str(arrays[_CHECK]) == _arrays_digest(arrays):
            arrays.pop(_CHECK)
            try:
                os.utime(path)  # recently used: evicted last
            except OSError:
                pass
            return arrays
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass
    try:  # damaged: recompute rather than trust it
        path.unlink()
    except OSError:
        pass
    return None


def save(kind: str, key: str, arrays: dict[str, np.ndarray]) -> Path | None:
    """Store ``arrays`` under ``(kind, key)`` atomically; returns the path, None if not written."""
    path = entry_path(kind, key)
    if path is None:
        return None
    arrays = {k: _c_order(np.asarray(v)) for k, v in arrays.items()}
    arrays[_CHECK] = np.array(_arrays_digest(arrays))
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
        _evict(path.parent, keep=path)
        return path
    except OSError:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        return None


def _max_bytes() -> int:
    try:
        return int(float(os.environ["TINYCL_CACHE_MAX_GB"]) * (1 << 30))
    except (KeyError, ValueError):
        return MAX_BYTES_PER_KIND


def _evict(folder: Path, keep: Path) -> None:
    """Remove the least recently used entries of ``folder`` until it holds at most the limit."""
    try:
        entries = sorted(((p.stat().st_mtime, p.stat().st_size, p) for p in folder.glob("*.npz")),
                         key=lambda e: e[0])
    except OSError:
        return
    total, limit = sum(e[1] for e in entries), _max_bytes()
    for _, size, p in entries:
        if total <= limit:
            break
        if p != keep:
            try:
                p.unlink()
                total -= size
            except OSError:
                pass


def cached_file_array(kind: str, paths: list[Path], compute, *params) -> np.ndarray:
    """``compute(paths, *params)`` (one array), cached under a key made of the files' paths,
    modification times and sizes, ``params``, the source of ``compute``'s module and the
    PIL version: e.g. a decoded JPEG folder, decoded once and then read back."""
    import PIL

    if len(paths) < MIN_ITEMS or cache_root() is None:
        return compute(paths, *params)
    stats = []
    for p in paths:
        st = os.stat(p)
        stats.append((os.path.abspath(p), st.st_mtime_ns, st.st_size))
    key = digest(kind, stats, list(params), PIL.__version__, source_digest(inspect.getmodule(compute)))
    hit = load(kind, key)
    if hit is not None and set(hit) == {"x"}:
        return hit["x"]
    x = compute(paths, *params)
    save(kind, key, {"x": x})
    return x
