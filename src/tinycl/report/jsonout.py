"""Strict RFC 8259 JSON for everything tinycl writes: no NaN or Infinity tokens, ever.

A non-finite float becomes ``null``; when the top level is an object, the paths of the
values replaced are listed under ``non_finite`` (e.g. ``["accuracy_matrix[2][1]"]``), so a
reader can tell a replaced value from a genuine null.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..errors import TinyclError


def _plain(o):
    """Tensors, tuples and numpy values as JSON types (anything else is an error)."""
    if hasattr(o, "tolist"):  # torch / numpy tensors and scalars
        return o.tolist()
    if isinstance(o, (tuple, set)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def clean(obj, path: str = "", replaced: list[str] | None = None):
    """A copy of ``obj`` with non-finite floats as ``None``; their paths are appended to ``replaced``."""
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        if replaced is not None:
            replaced.append(path or "$")
        return None
    if isinstance(obj, dict):
        return {str(k): clean(v, f"{path}.{k}" if path else str(k), replaced) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v, f"{path}[{i}]", replaced) for i, v in enumerate(obj)]
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return clean(_plain(obj), path, replaced)


def dumps(obj, indent: int | None = 2) -> str:
    """``obj`` as strict JSON; a top-level object gains ``non_finite`` when a value was replaced."""
    replaced: list[str] = []
    out = clean(obj, "", replaced)
    if isinstance(out, dict) and replaced:
        out["non_finite"] = sorted(set(out.get("non_finite") or []) | set(replaced))
    return json.dumps(out, indent=indent, allow_nan=False)


def write(path: str | Path, obj, indent: int | None = 2) -> None:
    """Write ``obj`` as strict JSON atomically (temporary file + rename); a failed write removes
    the temporary file and raises one line naming ``path``."""
    write_atomic(path, dumps(obj, indent))


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write text or bytes atomically: a temporary file beside ``path``, then a rename. A failed
    write removes the temporary file and raises one line naming ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data if isinstance(data, bytes) else data.encode())
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise TinyclError(f"cannot write {path}: {e.strerror or e}") from None
