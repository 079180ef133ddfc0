"""The one reader of every hardware description (targets, the ETA PE array, the TinyCL PU).

Every number in a spec file is a mapping ``{value: <number>, source: "<tag>: <text>", ...}``:

- tag ``paper:``, ``datasheet:`` or ``derived:``: a published figure or arithmetic on one;
- tag ``assumption:``: needs ``range: [lo, hi]`` (lo <= value <= hi), the span sensitivity
  analysis (``tinycl validate --sensitivity``) moves it over;
- tag ``calibrated:``: needs ``fitted_to: "<figure>"``, the published figure (a row name of
  ``tinycl validate``) it was fitted to; an optional ``range`` lets sensitivity move it too.

A table row (a target's ``efficiency`` rows) shares one ``source`` for its numbers; its
``range`` is a factor range applied to all of them. Unknown keys and missing tags are rejected
with one line naming the file and the key. A reader can be given ``overrides`` (dotted key ->
value; for a row, the factor) so that sensitivity and solving re-read a file with one number moved.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from tinycl.errors import TinyclError

SOURCE_TAGS = ("paper:", "datasheet:", "assumption:", "calibrated:", "derived:")
NUMBER_KEYS = {"value", "source", "range", "fitted_to"}


@dataclass(frozen=True)
class Param:
    """One number of a spec file: its value, tag and text, and where it may move."""

    key: str                      # dotted key inside the file
    value: float
    tag: str                      # paper | datasheet | derived | calibrated | assumption
    source: str
    range: tuple | None = None    # (lo, hi): assumptions; a factor range for table rows
    fitted_to: str | None = None  # calibrated: the figure it was fitted to
    factor: bool = False          # True for a table row: range and overrides are factors


@functools.lru_cache(maxsize=64)
def _read_cached(path: str, mtime_ns: int, size: int):
    try:
        return yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise TinyclError(f"spec file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    except OSError as e:
        raise TinyclError(f"cannot read spec file {path}: {e.strerror}") from None


def read_yaml(path: str | os.PathLike):
    """Parsed YAML of a spec file (cached on path, modification time and size; do not mutate)."""
    p = Path(path)
    if not p.is_file():
        raise TinyclError(f"spec file not found: {p}")
    st = p.stat()
    return _read_cached(str(p), st.st_mtime_ns, st.st_size)


class SpecReader:
    """Pulls tagged numbers out of a parsed spec file; records each as a :class:`Param`."""

    def __init__(self, where: str, kind: str = "spec file", overrides: dict | None = None):
        self.where = where
        self.kind = kind
        self.params: dict[str, Param] = {}
        self.overrides = dict(overrides or {})

    @property
    def sources(self) -> dict[str, str]:
        return {k: p.source for k, p in self.params.items()}

    def fail(self, key: str, msg: str):
        raise TinyclError(f"{self.kind} {self.where}: key {key!r} {msg}")

    def keys(self, d, allowed, dotted: str = "") -> None:
        """Reject keys of mapping ``d`` that are not in ``allowed``."""
        if not isinstance(d, dict):
            self.fail(dotted or "<top>", "must be a mapping")
        for k in d:
            if k not in allowed:
                name = f"{dotted}.{k}" if dotted else str(k)
                self.fail(name, f"is not allowed here (allowed: {', '.join(sorted(allowed))})")

    def section(self, d, key: str, required: bool = True) -> dict:
        sub = d.get(key) if isinstance(d, dict) else None
        if sub is None and not required:
            return {}
        if not isinstance(sub, dict):
            self.fail(key, "must be a mapping")
        return sub

    def tag(self, key: str, item: dict, factor: bool = False) -> tuple:
        """(tag, text, range, fitted_to) of a number or a table row, checked."""
        src = item.get("source")
        if not isinstance(src, str) or not src.strip().lower().startswith(SOURCE_TAGS):
            self.fail(key, f"needs a 'source' starting with one of {', '.join(SOURCE_TAGS)}")
        src = src.strip()
        tag = src.split(":", 1)[0].lower()
        rng = item.get("range")
        if rng is not None:
            if (not isinstance(rng, list) or len(rng) != 2
                    or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in rng) or rng[0] > rng[1]):
                self.fail(key, "range must be [lo, hi] with lo <= hi")
            rng = (float(rng[0]), float(rng[1]))
        if tag == "assumption" and rng is None:
            self.fail(key, "is an assumption and needs 'range: [lo, hi]'")
        fitted = item.get("fitted_to")
        if tag == "calibrated" and not (isinstance(fitted, str) and fitted.strip()):
            self.fail(key, "is calibrated and needs 'fitted_to: <the published figure it was fitted to>'")
        if fitted is not None and tag != "calibrated":
            self.fail(key, "has 'fitted_to' but its source is not 'calibrated:'")
        return tag, src, rng, fitted

    def number(self, d: dict, key: str, dotted: str, positive: bool = True, required: bool = True,
               integer: bool = False):
        """A tagged number ``d[key]`` recorded under ``dotted`` (an override replaces its value)."""
        if not isinstance(d, dict) or key not in d:
            if not required:
                return None
            self.fail(dotted, "is missing")
        item = d[key]
        if not isinstance(item, dict) or "value" not in item:
            self.fail(dotted, "must be {value: <number>, source: <text>}")
        self.keys(item, NUMBER_KEYS, dotted)
        v = item["value"]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.fail(dotted, f"value must be a number, got {v!r}")
        tag, src, rng, fitted = self.tag(dotted, item)
        if rng is not None and not rng[0] <= v <= rng[1]:
            self.fail(dotted, f"value {v!r} lies outside its range [{rng[0]:g}, {rng[1]:g}]")
        self.params[dotted] = Param(dotted, float(v), tag, src, rng, fitted)
        v = self.overrides.get(dotted, v)
        if positive and v <= 0:
            self.fail(dotted, f"value must be > 0, got {v!r}")
        if v < 0:
            self.fail(dotted, f"value must be >= 0, got {v!r}")
        if integer:
            if dotted in self.overrides:
                v = max(1 if positive else 0, round(v))
            if v != int(v):
                self.fail(dotted, f"must be a whole number, got {v!r}")
            return int(v)
        return float(v)

    def row_factor(self, row: dict, dotted: str, where_key: str) -> float:
        """Check a table row's shared source; return the override factor of its numbers (1 if none)."""
        tag, src, rng, fitted = self.tag(where_key, row, factor=True)
        if rng is not None and not rng[0] <= 1.0 <= rng[1]:
            self.fail(where_key, "a row's range is a factor range and must contain 1")
        self.params[dotted] = Param(dotted, 1.0, tag, src, rng, fitted, factor=True)
        return float(self.overrides.get(dotted, 1.0))

    def check_overrides(self) -> None:
        """Every override must name a number the file has (a typo must not pass silently)."""
        for k in self.overrides:
            if k not in self.params:
                raise TinyclError(f"{self.kind} {self.where}: override {k!r} names no number of the file")


def resolve(name_or_path, builtin_dir: Path, kind: str, names: list[str]) -> Path:
    """A built-in spec by name, or a user's YAML file by path."""
    s = str(name_or_path)
    if s.endswith((".yaml", ".yml")) or os.sep in s:
        path = Path(s)
        if not path.is_file():
            raise TinyclError(f"{kind} file not found: {s}")
        return path
    path = builtin_dir / f"{s}.yaml"
    if not path.is_file():
        raise TinyclError(f"unknown {kind} {s!r}; available: {', '.join(names)}")
    return path


def split_overrides(overrides: dict | None, prefix: str) -> dict:
    """The overrides ``{"<prefix>:<key>": v}`` that belong to the file ``prefix`` (keys without it)."""
    out = {}
    for k, v in (overrides or {}).items():
        f, _, key = k.partition(":")
        if f == prefix:
            out[key] = v
    return out
