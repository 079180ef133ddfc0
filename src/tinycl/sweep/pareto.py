"""Pareto fronts and the recommended trial."""

from __future__ import annotations

import math


def _key(values, goals):
    """Values turned so that smaller is better in every objective."""
    return [(-v if g == "max" else v) for v, g in zip(values, goals)]


def dominates(a, b, goals) -> bool:
    """``a`` is no worse than ``b`` in every objective and better in one."""
    ka, kb = _key(a, goals), _key(b, goals)
    return all(x <= y for x, y in zip(ka, kb)) and any(x < y for x, y in zip(ka, kb))


def front(points: list, goals: list[str]) -> list[int]:
    """Indices of the non-dominated points (each a list of objective values; NaN/None never on it).

    Sorted sweep: points ordered by their objective keys; a point is on the front when no point
    kept before it dominates it (equal points are all kept). O(n * front size).
    """
    ok = [i for i, p in enumerate(points)
          if all(v is not None and not (isinstance(v, float) and math.isnan(v)) for v in p)]
    order = sorted(ok, key=lambda i: _key(points[i], goals))
    kept: list[int] = []
    for i in order:
        if not any(dominates(points[j], points[i], goals) for j in kept):
            kept.append(i)
    return sorted(kept)


def recommend(rows: list[dict], objectives: list[tuple[str, str]]) -> dict | None:
    """The best finished, unpruned trial on the front: best first objective, ties by the next ones."""
    done = [r for r in rows if r["status"] == "ok"]
    if not done:
        return None
    goals = [g for _, g in objectives]
    pts = [[r.get(m) for m, _ in objectives] for r in done]
    on = front(pts, goals)
    if not on:
        return None
    best = min(on, key=lambda i: (_key(pts[i], goals), done[i]["id"]))
    return done[best]
