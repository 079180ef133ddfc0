"""Which assumption a figure rests on: sensitivity and solving for unknowns (``tinycl validate
--sensitivity`` / ``--solve``).

- **Sensitivity**: for each prediction row, every number of the spec files it reads that has a
  ``range`` (assumptions, and calibrated numbers that state one) is moved to each end of its
  range, the others fixed; the row's figure at both ends is reported (a table and a tornado PNG).
- **Solving**: for each row that misses (``|error| > SOLVE_MISS``) and names unpublished numbers to
  solve for, the value of those numbers (moved together, by one factor) that reproduces the
  published figure, by bisection on a log scale over ``SEARCH`` times the stated range.
  **Plausibility rule**: a solved value is plausible when it lies inside the number's stated
  range, which is where the file says the number can physically be; outside it is implausible,
  and the miss is then due to something else (e.g. the assumed workload).
"""

from __future__ import annotations

import math

from tinycl.hw.cost import resolve_target
from tinycl.hw.validate import Row, rows as eval_rows, spec_params, table_rows

SOLVE_MISS = 0.10     # rows that miss by more than 10 % are solved for
SEARCH = 100.0        # bisection bracket: the stated range widened 100x either way
TOP = 8               # assumptions shown per row in the table and the plot


def _movable(files) -> dict:
    return {k: p for k, p in spec_params(files).items() if p.range is not None and p.range[0] < p.range[1]}


def sensitivity(fast: bool = True, only: str | None = None) -> list[dict]:
    """Per prediction row: ``{figure, base, published, swings: [{key, tag, lo, hi, at_lo, at_hi}]}``,
    swings sorted by ``|at_hi - at_lo|``, numbers that do not move the figure left out."""
    table = {r["figure"]: r for r in eval_rows(fast)}
    out = []
    for row in table_rows(fast):
        if table[row.figure]["kind"] != "prediction" or (only and only not in row.figure):
            continue
        base = table[row.figure]["modelled"]
        swings = []
        for k, p in _movable(row.files).items():
            lo, hi = p.range
            a, b = row.compute({k: lo}), row.compute({k: hi})
            if not (math.isclose(a, base, rel_tol=1e-9) and math.isclose(b, base, rel_tol=1e-9)):
                swings.append({"key": k, "tag": p.tag, "value": p.value, "lo": lo, "hi": hi, "at_lo": a, "at_hi": b,
                               "factor": p.factor})
        swings.sort(key=lambda s: -abs(s["at_hi"] - s["at_lo"]))
        out.append({"figure": row.figure, "unit": row.unit, "published": row.published, "base": base,
                    "swings": swings})
    return out


def _solve_one(row: Row, keys: tuple, given: dict, params: dict) -> dict:
    """The common factor on ``keys`` (from their values) at which ``row`` gives its published figure."""
    base = {k: params[k].value for k in keys}

    def f(factor):
        ov = dict(given)
        ov.update({k: v * factor for k, v in base.items()})
        return row.compute(ov) - row.published

    lead = params[keys[0]]
    if lead.value == 0:
        return _solve_additive(row, keys[0], given, lead)
    lo_f = max(1e-9, (lead.range[0] if lead.range and lead.range[0] > 0 else lead.value) / lead.value / SEARCH)
    hi_f = (lead.range[1] if lead.range else lead.value) / lead.value * SEARCH
    a, b = math.log(lo_f), math.log(hi_f)
    fa, fb = f(math.exp(a)), f(math.exp(b))
    res = {"keys": list(keys), "given": given, "value": lead.value, "range": lead.range}
    if fa * fb > 0:
        return dict(res, solved=None, plausible=False,
                    note=f"no value in [{lead.value * math.exp(a):.4g}, {lead.value * math.exp(b):.4g}] reproduces it")
    for _ in range(60):
        m = (a + b) / 2
        fm = f(math.exp(m))
        if fa * fm <= 0:
            b, fb = m, fm
        else:
            a, fa = m, fm
    x = lead.value * math.exp((a + b) / 2)
    return _verdict(res, x, lead, row.published + f(math.exp((a + b) / 2)))


def _solve_additive(row: Row, key: str, given: dict, p) -> dict:
    """A number that is 0 by default (e.g. an overhead): bisection on its value over [0, SEARCH x hi]."""
    def f(x):
        return row.compute(dict(given, **{key: x})) - row.published
    a, b = 0.0, p.range[1] * SEARCH
    fa, fb = f(a), f(b)
    res = {"keys": [key], "given": given, "value": p.value, "range": p.range}
    if fa * fb > 0:
        return dict(res, solved=None, plausible=False, note=f"no value in [0, {b:.4g}] reproduces it")
    for _ in range(60):
        m = (a + b) / 2
        fm = f(m)
        if fa * fm <= 0:
            b = m
        else:
            a, fa = m, fm
    x = (a + b) / 2
    return _verdict(res, x, p, row.published + f(x))


def _verdict(res: dict, x: float, p, at: float) -> dict:
    if p.value == int(p.value) and p.value < 1e6:   # a count (MAC units, batch): the file rounds it
        x = float(max(1, round(x))) if p.value >= 1 else x
    lo, hi = p.range if p.range else (p.value, p.value)
    ok = lo <= x <= hi
    where = "inside" if ok else "outside"
    return dict(res, solved=x, modelled_at_solution=at, plausible=ok,
                note=f"{where} the stated range [{lo:.4g}, {hi:.4g}]" + ("" if ok else f" ({x / (hi if x > hi else lo):.3g}x)"))


def solve(fast: bool = True) -> list[dict]:
    """For each missing row with numbers to solve for: the values that reproduce the published figure."""
    table = {r["figure"]: r for r in eval_rows(fast)}
    out = []
    for row in table_rows(fast):
        r = table[row.figure]
        if not row.solve or r["error"] is None or abs(r["error"]) <= SOLVE_MISS:
            continue
        params = spec_params(row.files)
        sols = [_solve_one(row, keys, given, params) for keys, given in row.solve]
        for x in sols:     # a cycle count is easier to judge in seconds
            f, _, key = x["keys"][0].partition(":")
            if x["solved"] is not None and key.startswith("overheads.") and f not in ("eta-array", "tinycl_pu"):
                x["seconds"] = x["solved"] / resolve_target(f).clock_hz
                x["note"] += f"; = {x['seconds'] * 1e3:.3g} ms"
        out.append({"figure": row.figure, "unit": row.unit, "published": row.published, "modelled": r["modelled"],
                    "error": r["error"], "kind": r["kind"], "solutions": sols})
    return out


def format_sensitivity(sens: list[dict]) -> str:
    lines = ["| figure (modelled) | assumption | range | figure at low end | figure at high end |",
             "|---|---|---|---|---|"]
    for s in sens:
        for i, w in enumerate(s["swings"][:TOP]):
            head = f"{s['figure']} ({s['base']:.4g} {s['unit']}; published {s['published']})" if i == 0 else ""
            rng = f"x{w['lo']:g} .. x{w['hi']:g}" if w["factor"] else f"{w['lo']:.4g} .. {w['hi']:.4g}"
            lines.append(f"| {head} | {w['key']} ({w['tag']}) | {rng} | {w['at_lo']:.4g} | {w['at_hi']:.4g} |")
        if not s["swings"]:
            lines.append(f"| {s['figure']} | (no ranged number moves it) | | | |")
    return "\n".join(lines)


def format_solve(sol: list[dict]) -> str:
    lines = ["| figure (published / modelled) | solved for | assumed | value that reproduces it | plausible? |",
             "|---|---|---|---|---|"]
    for s in sol:
        for i, x in enumerate(s["solutions"]):
            head = f"{s['figure']} ({s['published']} / {s['modelled']:.4g} {s['unit']})" if i == 0 else ""
            keys = " + ".join(x["keys"]) if len(x["keys"]) < 3 else f"{x['keys'][0]} (+ {len(x['keys']) - 1} tied)"
            val = "-" if x["solved"] is None else f"{x['solved']:.4g}"
            verdict = ("yes, " if x["plausible"] else "no, ") + x["note"]
            lines.append(f"| {head} | {keys} | {x['value']:.4g} | {val} | {verdict} |")
    return "\n".join(lines)


def tornado_png(sens: list[dict], path: str) -> None:
    """One tornado per prediction row: the figure at each end of each assumption's range (% of modelled)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sens = [s for s in sens if s["swings"]]
    fig, axes = plt.subplots(len(sens), 1, figsize=(9, 1.0 + 0.32 * TOP * len(sens)), squeeze=False)
    for ax, s in zip(axes[:, 0], sens):
        sw = s["swings"][:TOP][::-1]
        base = s["base"]
        for y, w in enumerate(sw):
            lo, hi = (100 * (w["at_lo"] / base - 1), 100 * (w["at_hi"] / base - 1))
            ax.barh(y - 0.2, lo, height=0.4, color="tab:blue")
            ax.barh(y + 0.2, hi, height=0.4, color="tab:orange")
        ax.set_yticks(range(len(sw)), [w["key"] for w in sw], fontsize=7)
        ax.axvline(0, color="k", lw=0.8)
        pub = 100 * (s["published"] / base - 1)
        ax.axvline(pub, color="tab:red", ls="--", lw=1)
        ax.set_title(f"{s['figure']}: {base:.4g} {s['unit']} (published {s['published']}, red)", fontsize=8)
        ax.set_xlabel("% change of the figure (blue: range low end, orange: high end)", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
