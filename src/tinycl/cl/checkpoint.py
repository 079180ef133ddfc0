"""Atomic, checksummed state files.

Layout of a file: ``MAGIC`` (8 bytes), the SHA-256 of the payload (32 bytes), the
payload length (8 bytes, little-endian), the payload (a ``torch.save`` stream).
Writing goes to a temporary file in the same folder, is fsynced, then renamed over
the target (atomic on POSIX), and the folder is fsynced; the previous file is kept
as ``NAME.prev`` (a hard link made before the swap, so ``NAME`` exists at every moment)
and a later corruption never leaves no good state behind.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import torch

from ..errors import TinyclError

MAGIC = b"TINYCL\x01\x00"
HEADER = len(MAGIC) + 32 + 8


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(path: str | Path, state: dict) -> int:
    """Write ``state`` atomically to ``path``; returns the bytes written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    blob = MAGIC + hashlib.sha256(payload).digest() + len(payload).to_bytes(8, "little") + payload
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    if path.exists():  # keep the last good state as NAME.prev, without a moment with no NAME
        link = path.with_name(f".{path.name}.prev-{os.getpid()}")
        if link.exists():
            link.unlink()
        os.link(path, link)
        os.replace(link, path.with_name(path.name + ".prev"))
    os.replace(tmp, path)
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
        return torch.load(io.BytesIO(payload), weights_only=False)
    except Exception as e:  # noqa: BLE001 - verified bytes that still fail to unpickle
        raise TinyclError(f"checkpoint {path} cannot be read: {e}") from None
