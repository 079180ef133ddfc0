"""What a sweep writes: trials.json, trials.csv, pareto.png, report.html, recommended.yaml, summary."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import yaml

from ..report import jsonout
from ..report.table import human_bytes, table
from ..report.jsonout import write_atomic
from . import spec as S
from .pareto import front, recommend

FINISHED = ("ok", "failed", "pruned")


def _order(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: r["id"])


def columns(spec: dict) -> list[str]:
    cols = ["id", "status", "reason"] + [f"axis.{k}" for k in spec["axes"]]
    cols += ["average_accuracy", "forgetting", "replay_bytes", "device_bytes", "footprint_bytes",
             "latency_s", "energy_j"]
    for t in spec["targets"]:
        cols += [f"latency_s@{t}", f"energy_j@{t}", f"device_bytes@{t}"]
    return cols + ["seconds"]


def _cell(r: dict, c: str):
    if c.startswith("axis."):
        return r["point"].get(c[5:])
    if "@" in c:
        m, t = c.split("@", 1)
        return r["targets"].get(t, {}).get(m)
    return r.get(c)


def write_tables(out: Path, rows: list[dict], spec: dict) -> None:
    """trials.json (strict JSON) and trials.csv, each replaced atomically."""
    rows = _order(rows)
    jsonout.write(out / "trials.json", {"schema": "tinycl.sweep/1", "spec": spec, "trials": rows})
    buf = io.StringIO()
    w = csv.writer(buf)
    cols = columns(spec)
    w.writerow(cols)
    for r in rows:
        w.writerow(["" if _cell(r, c) is None else _cell(r, c) for c in cols])
    write_atomic(out / "trials.csv", buf.getvalue())


def _front2(rows: list[dict], x: str, ygoal: str = "max") -> list[int]:
    return front([[r[x], r["average_accuracy"]] for r in rows], ["min", ygoal])


def pareto_png(rows: list[dict], rec: dict | None, title: str) -> bytes:
    """Accuracy against device memory and against energy; the front of each marked and labelled."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok" and r["average_accuracy"] is not None]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, x, xl in ((axes[0], "device_bytes", "device memory of a learning event (KiB)"),
                      (axes[1], "energy_j", "energy per learning event (mJ)")):
        scale = 1 / 1024 if x == "device_bytes" else 1e3
        on = set(_front2(ok, x))
        xs = [r[x] * scale for r in ok]
        ys = [100 * r["average_accuracy"] for r in ok]
        ax.scatter(xs, ys, c="#8a8a8a", s=28, label="trial")
        fr = sorted(on, key=lambda i: xs[i])
        ax.plot([xs[i] for i in fr], [ys[i] for i in fr], "-o", color="#c0392b", ms=7, label="Pareto front")
        for i in fr:
            ax.annotate(ok[i]["id"][:6], (xs[i], ys[i]), textcoords="offset points", xytext=(5, 5), fontsize=8)
        if rec is not None and rec in ok:
            i = ok.index(rec)
            ax.scatter([xs[i]], [ys[i]], marker="*", s=260, c="#f1c40f", edgecolors="k", zorder=5,
                       label="recommended")
        ax.set_xlabel(xl)
        ax.set_ylabel("average accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def recommended_yaml(rec: dict | None, spec: dict) -> str:
    if rec is None:
        return "# no finished trial meets the constraints: nothing to recommend\n"
    head = (f"# tinycl sweep: recommended config (trial {rec['id']}), best on the Pareto front of\n"
            f"# {', '.join(spec['objectives'])} under the constraints {_cons_text(spec)}.\n"
            f"# average_accuracy {rec['average_accuracy']}, device_bytes {rec['device_bytes']}, "
            f"energy_j {rec['energy_j']:.4g} on {spec['constraints']['target']}\n"
            f"# run it: tinycl run --config recommended.yaml\n")
    return head + yaml.safe_dump(rec["config"], sort_keys=False)


def _cons_text(spec: dict) -> str:
    c = spec["constraints"]
    parts = [f"{k} <= {c[k]:g}" for k in ("memory_bytes", "replay_bytes", "latency_s", "energy_j") if k in c]
    if c.get("must_fit"):
        parts.append("fits")
    return f"on {c['target']}: " + (", ".join(parts) if parts else "none")


def write_all(out: Path, rows: list[dict], spec: dict) -> dict | None:
    """All outputs of a finished sweep; returns the recommended row (or None)."""
    from .html import report_html

    write_tables(out, rows, spec)
    rec = recommend(rows, S.objectives(spec))
    png = pareto_png(rows, rec, f"tinycl sweep: {len(rows)} trials, constraints {_cons_text(spec)}")
    write_atomic(out / "pareto.png", png)
    ry = recommended_yaml(rec, spec)
    write_atomic(out / "recommended.yaml", ry)
    write_atomic(out / "report.html", report_html(_order(rows), spec, png, ry, columns(spec), _cell,
                                                  _cons_text(spec)))
    return rec


def summary(res: dict, spec: dict, top: int = 10) -> str:
    """The terminal summary: the best finished trials, the counts, the recommendation."""
    rows = res["rows"]
    objs = S.objectives(spec)
    ok = [r for r in rows if r["status"] == "ok"]
    m, g = objs[0]
    ok.sort(key=lambda r: (r[m] is None, -(r[m] or 0) if g == "max" else (r[m] or 0)))
    axes = list(spec["axes"])
    head = ["trial"] + axes + ["accuracy", "device mem", "replay", "latency ms", "energy mJ"]
    body = [[r["id"]] + [r["point"].get(a) for a in axes]
            + [f"{100 * r['average_accuracy']:.2f}%" if r["average_accuracy"] is not None else "-",
               human_bytes(r["device_bytes"]), human_bytes(r["replay_bytes"]),
               f"{r['latency_s'] * 1e3:.3g}", f"{r['energy_j'] * 1e3:.3g}"] for r in ok[:top]]
    n = {s: sum(r["status"] == s for r in rows) for s in FINISHED}
    lines = [table(head, body, "l" * (1 + len(axes)) + "r" * 5) if body else "(no finished trial)",
             f"\n{len(rows)} trials: {n['ok']} ran, {n['pruned']} pruned, {n['failed']} failed "
             f"({res['seconds']:.1f} s); latency and energy on {spec['constraints']['target']}"]
    for r in rows:
        if r["status"] == "failed":
            lines.append(f"  failed {r['id']}: {r['reason']}")
    rec = res["recommended"]
    lines.append(f"recommended: trial {rec['id']} {rec['point']}" if rec else "recommended: none")
    return "\n".join(lines)
