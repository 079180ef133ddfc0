"""Epoch time and energy of a model on the TinyCL PU, per-layer tables, JSON and the plot.

An epoch is ``samples`` new samples (50 000 for CIFAR-10), each trained once, plus
``replays`` rehearsal steps after every new sample but the first (the memory is empty
then). Time = sum of pass cycles / clock; energy = dynamic energy of the counted MACs,
ops, register reads and memory words, plus idle (leakage) power x time. The 86 mW
x time figure is given beside it.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .arch import MEMORIES, Arch
from .control import LayerSpec, expected_inserts, plan, step_counts
from .cost import control_counts
from .counts import PassCount

PUBLISHED = {"tinycl_epoch_s": 1.76, "tinycl_power_w": 0.086, "p100_epoch_s": 103.0,
             "source": "paper: Ressa et al., arXiv 2402.09780 (abstract)"}


def _scaled(pc: PassCount, times: float, arch: Arch) -> dict:
    return {"reads": {m: pc.reads[m] * times for m in MEMORIES}, "writes": {m: pc.writes[m] * times for m in MEMORIES},
            "reg_reads": pc.reg_reads * times, "macs": pc.macs * times,
            "cycles": pc.cycles(arch) * times, "energy_j": pc.energy_j(arch) * times}


def _add(acc: dict, d: dict) -> None:
    for k, v in d.items():
        if isinstance(v, dict):
            _add(acc.setdefault(k, {m: 0 for m in v}), v)
        else:
            acc[k] = acc.get(k, 0) + v


def epoch_summary(arch: Arch, model: nn.Sequential, input_shape: tuple, orders=("raster", "snake"),
                  samples: int = 50_000, replays: int | None = None) -> dict:
    """Per-pass counts of one training step and epoch totals per window order (JSON-ready)."""
    specs: list[LayerSpec] = plan(model, input_shape)
    r = arch.replays_per_new_sample if replays is None else replays
    n_replays = max(samples - 1, 0) * r
    steps = samples + n_replays
    sample_words = 1
    for d in input_shape:
        sample_words *= int(d)
    inserts = expected_inserts(samples, arch.rehearsal_capacity)
    ctl = [(control_counts(arch, sample_words, new=True, inserted=False), samples),
           (control_counts(arch, sample_words, new=True, inserted=True), 0),
           (control_counts(arch, sample_words, new=False, inserted=False), n_replays)]
    ins = PassCount("control", "control")
    ins.write("rehearsal", sample_words)        # the insert writes alone (the rest is counted above)
    layers: "OrderedDict[tuple, dict]" = OrderedDict()
    total = {}
    for order in orders:
        step = step_counts(arch, specs, order)
        for pc in step:
            row = layers.setdefault((pc.layer, pc.op), {"layer": pc.layer, "op": pc.op, "orders": {}})
            row["orders"][order] = _scaled(pc, 1, arch)
        epoch: dict = {}
        for pc in step:
            _add(epoch, _scaled(pc, steps, arch))
        for pc, times in ctl:
            _add(epoch, _scaled(pc, times, arch))
        ins_d = _scaled(ins, inserts, arch)
        ins_d["cycles"] = ins.memory_cycles(arch) * inserts   # no PU reconfiguration for a copy
        _add(epoch, ins_d)
        latency = epoch["cycles"] / arch.clock_hz
        reads, writes = sum(epoch["reads"].values()), sum(epoch["writes"].values())
        total[order] = {"accesses": {"reads": reads, "writes": writes, "by_memory": {
                            m: {"reads": epoch["reads"][m], "writes": epoch["writes"][m]} for m in MEMORIES},
                            "register_reads": epoch["reg_reads"]},
                        "macs": epoch["macs"], "cycles": epoch["cycles"],
                        "step_cycles": sum(pc.cycles(arch) for pc in step),
                        "epoch_latency_s": latency,
                        "epoch_energy_j": epoch["energy_j"] + arch.idle_power_w * latency,
                        "epoch_energy_at_active_power_j": arch.active_power_w * latency,
                        "average_power_w": (epoch["energy_j"] + arch.idle_power_w * latency) / latency}
    rows = []
    for row in layers.values():
        if len(orders) == 2 and row["op"].startswith("conv"):
            a, b = (sum(row["orders"][o]["reads"].values()) for o in ("raster", "snake"))
            row["snake_read_saving"] = (a - b) / a if a else 0.0
        rows.append(row)
    return {"model": getattr(model, "zoo_name", type(model).__name__), "input_shape": list(input_shape),
            "arch": arch.name, "target": arch.target_name, "clock_hz": arch.clock_hz, "mac_units": arch.mac_units,
            "word_bytes": arch.word_bytes, "samples": samples, "replays_per_new_sample": r,
            "training_steps": steps, "expected_rehearsal_inserts": inserts,
            "layers_per": "one training step (batch 1)", "layers": rows, "total": total,
            "published": PUBLISHED, "assumptions": arch.sources}


def format_table(summary: dict) -> str:
    """Per-pass table (one training step) and epoch totals, as plain text."""
    orders = list(summary["total"])
    lines = [f"TinyCL PU model: {summary['model']} {'x'.join(map(str, summary['input_shape']))}, "
             f"{summary['mac_units']} MACs at {summary['clock_hz'] / 1e6:.0f} MHz, "
             f"{summary['word_bytes'] * 8}-bit words; per training step (batch 1):"]
    hdr = f"{'layer':<8} {'pass':<10} {'order':<7} {'cycles':>9} {'reads':>9} {'writes':>8} {'reg reads':>10} {'energy uJ':>10}"
    lines.append(hdr)
    for row in summary["layers"]:
        for o in orders:
            d = row["orders"][o]
            if o != orders[0] and not row["op"].startswith("conv"):
                continue
            lines.append(f"{row['layer']:<8} {row['op']:<10} {(o if row['op'].startswith('conv') else '-'):<7} "
                         f"{d['cycles']:>9,} {sum(d['reads'].values()):>9,} {sum(d['writes'].values()):>8,} "
                         f"{d['reg_reads']:>10,} {d['energy_j'] * 1e6:>10.3f}")
        if "snake_read_saving" in row:
            lines.append(f"{'':<8} {'':<10} snake reads {100 * row['snake_read_saving']:.2f}% fewer than raster")
    lines.append(f"epoch: {summary['samples']:,} new samples + {summary['training_steps'] - summary['samples']:,} "
                 f"replays = {summary['training_steps']:,} training steps")
    pub = summary["published"]
    for o in orders:
        t = summary["total"][o]
        lines.append(f"total {o:<6}: {t['epoch_latency_s']:.2f} s/epoch, {t['epoch_energy_j']:.3f} J/epoch "
                     f"({t['average_power_w'] * 1e3:.1f} mW avg; at {pub['tinycl_power_w'] * 1e3:.0f} mW: "
                     f"{t['epoch_energy_at_active_power_j']:.3f} J), reads {t['accesses']['reads']:.4g}, "
                     f"writes {t['accesses']['writes']:.4g}")
    lines.append(f"published: TinyCL {pub['tinycl_epoch_s']} s/epoch at {pub['tinycl_power_w'] * 1e3:.0f} mW "
                 f"(~{pub['tinycl_epoch_s'] * pub['tinycl_power_w']:.3f} J); P100 {pub['p100_epoch_s']} s/epoch")
    return "\n".join(lines)


def plot_accesses(summary: dict, path: str) -> None:
    """Bar chart of memory reads per layer pass (one training step) for each window order."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    orders = list(summary["total"])
    rows = summary["layers"]
    labels = [f"{r['layer']}\n{r['op']}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows)), 4))
    width = 0.8 / len(orders)
    for k, o in enumerate(orders):
        vals = [sum(r["orders"][o]["reads"].values()) for r in rows]
        ax.bar([i + k * width for i in range(len(rows))], vals, width, label=o)
    ax.set_xticks([i + width * (len(orders) - 1) / 2 for i in range(len(rows))], labels, fontsize=7)
    ax.set_ylabel("memory reads per training step (words)")
    ax.set_yscale("log")
    ax.set_title(f"TinyCL PU, {summary['model']}: reads per layer pass by window order")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
