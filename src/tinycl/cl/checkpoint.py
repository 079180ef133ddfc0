"""Atomic, checksummed state files, and the lock on a run's output folder.

Layout of a file: ``MAGIC`` (8 bytes), the SHA-256 of the payload (32 bytes), the
payload length (8 bytes, little-endian), the payload (a ``torch.save`` stream of tensors
and plain values: dicts, lists, tuples, strings, numbers, booleans, None).
Writing goes to a temporary file in the same folder, is fsynced, then renamed over
the target (atomic on POSIX), and the folder is fsynced; the previous file is kept
as ``NAME.prev`` (a hard link made before the swap, so ``NAME`` exists at every moment)
and a later corruption never leaves no good state behind. A failed write removes its
temporary file and names the path in its error.

Reading unpickles with ``torch.load(weights_only=True)``: only tensors and plain values are
accepted, so a file from someone else cannot run code when it is opened.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from contextlib import contextmanager
from pathlib import Path

import torch

from ..errors import TinyclError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no folder lock
    fcntl = None

MAGIC = b"TINYCL\x01\x00"
HEADER = len(MAGIC) + 32 + 8
LOCK = ".tinycl.lock"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(p: Path) -> None:
    try:
        p.unlink()
    except OSError:
        pass


def save(path: str | Path, state: dict) -> int:
    """Write ``state`` atomically to ``path``; returns the bytes written.

    On failure (a full disk, a folder that cannot be written) the temporary files are
    removed, ``path`` and ``path.prev`` are as they were, and one line names ``path``.
    """
    path = Path(path)
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    try:  # what load() could not read back is refused now, not after the work that follows
        torch.load(io.BytesIO(payload), weights_only=True)
    except pickle.UnpicklingError:
        raise TinyclError(f"cannot write {path}: the state holds objects other than tensors and plain values "
                          f"(load would refuse them)") from None
    blob = MAGIC + hashlib.sha256(payload).digest() + len(payload).to_bytes(8, "little") + payload
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    link = path.with_name(f".{path.name}.prev-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():  # keep the last good state as NAME.prev, without a moment with no NAME
            _remove(link)
            os.link(path, link)
            os.replace(link, path.with_name(path.name + ".prev"))
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        _remove(link)
        raise TinyclError(f"cannot write {path}: {e.strerror or e} (temporary file removed)") from None
    _fsync_dir(path.parent)
    return len(blob)


def load(path: str | Path) -> dict:
    """Read and verify a state file; a damaged one raises one clear line (file left as is)."""
    path = Path(path)
    if not path.is_file():
        raise TinyclError(f"checkpoint not found: {path}")
    blob = path.read_bytes()
    if len(blob) < HEADER or blob[:len(MAGIC)] != MAGIC:
        raise TinyclError(f"checkpoint {path} is not a tinycl state file or is truncated")
    digest, size = blob[len(MAGIC):len(MAGIC) + 32], int.from_bytes(blob[len(MAGIC) + 32:HEADER], "little")
    payload = blob[HEADER:]
    if len(payload) != size:
        raise TinyclError(f"checkpoint {path} is truncated ({len(payload)} of {size} payload bytes)")
    if hashlib.sha256(payload).digest() != digest:
        raise TinyclError(f"checkpoint {path} is corrupt (checksum mismatch)")
    try:
        return torch.load(io.BytesIO(payload), weights_only=True)
    except pickle.UnpicklingError:
        raise TinyclError(f"checkpoint {path} holds objects other than tensors and plain values; "
                          f"refused to load it (unpickling them could run code)") from None
    except Exception as e:  # noqa: BLE001 - verified bytes that still fail to unpickle
        raise TinyclError(f"checkpoint {path} cannot be read: {str(e).splitlines()[0] if str(e) else e!r}") from None


def check_writable(path: str | Path) -> None:
    """Fail at once, in one line, when ``path`` cannot be written as a file (before any work).

    Creates the missing parent folders and writes and removes a probe file beside ``path``.
    """
    path = Path(path)
    if path.is_dir():
        raise TinyclError(f"cannot write {path}: it is a directory; give a file path such as {path / 'backbone.ckpt'}")
    probe = path.with_name(f".{path.name}.probe-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb"):
            pass
    except OSError as e:
        raise TinyclError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        _remove(probe)


_HELD: dict[str, list] = {}  # real path of a locked folder -> [fd, depth] (re-entrant in one process)


@contextmanager
def folder_lock(folder: str | Path):
    """Hold an exclusive lock on ``folder`` (``flock`` on ``folder/.tinycl.lock``, created if needed).

    A second process asking for the same folder gets one line at once, and nothing in the
    folder is touched; the lock goes with the process that holds it, even when it is killed.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TinyclError(f"cannot create output folder {folder}: {e.strerror or e}") from None
    key = os.path.realpath(folder)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    try:
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise TinyclError(f"cannot write in output folder {folder}: {e.strerror or e}") from None
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise TinyclError(f"{folder} is in use by another tinycl run (it holds {folder / LOCK}); "
                          f"wait for it to end or use another --out") from None
    _HELD[key] = [fd, 1]
    try:
        yield
    finally:
        del _HELD[key]
        os.close(fd)  # closing the descriptor releases the lock
