"""What ``tinycl run`` shows: the final table, ``accuracy.png`` and ``memory.png``."""

from __future__ import annotations

from pathlib import Path

from .table import human_bytes, table


def summary(results: dict) -> str:
    """Per-experience accuracy and the totals, as text."""
    rows = []
    for e, acc, log in zip(results["experiences"], results["seen_accuracy"], results["per_experience"]):
        rows.append([e["id"], ",".join(map(str, e["classes"])), e["train"], "n/a" if acc is None else f"{100 * acc:.1f}",
                     f"{log['seconds']:.1f}", f"{log['train_macs'] / 1e9:.2f}",
                     human_bytes(log["replay_memory_bytes"])])
    t = table(["exp", "classes", "train", "acc seen %", "time s", "GMAC", "replay mem"], rows, "rlrrrrr")
    cfg = results["config"]
    lines = [t, "",
             f"strategy {results['strategy']}, latent {cfg['latent_layer']} {results['latent_shape']} at "
             f"{results['lr_bits']} bits, {results['replay_capacity']} replays, precision {results['precision']}",
             f"average accuracy {_pct(results['average_accuracy'], '.2f', '%')}   forgetting "
             f"{_pct(results['forgetting'])}   BWT {_pct(results['bwt'])}",
             f"replay memory {results['replay_memory_bytes']['total']:,} bytes; device footprint "
             f"{results['footprint_bytes']['total']:,} bytes"]
    if results.get("diverged"):
        lines.append(f"WARNING: {diverged_line(results)}")
    ev = results.get("learning_event")
    if ev:
        lines.append(f"learning event on {ev['target']}: {1e3 * ev['latency_s']:.2f} ms, "
                     f"{1e3 * ev['energy_j']:.3f} mJ, fits: {ev['fits']}")
    return "\n".join(lines)


def diverged_line(results: dict) -> str:
    """One line saying from which experience the training loss was not finite."""
    return (f"training diverged: the loss was not finite from experience "
            f"{results.get('diverged_from_experience')} on; accuracies after it are not meaningful "
            f"(results.json: \"diverged\": true)")


def _pct(v, form: str = "+.2f", unit: str = " pts"):
    return "n/a" if v is None else f"{100 * v:{form}}{unit}"


def plots(results: dict, out_dir: Path) -> list[Path]:
    """Write ``accuracy.png`` (accuracy over experiences) and ``memory.png`` (where the bytes go)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    n = len(results["seen_accuracy"])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(range(n), [float("nan") if a is None else 100 * a for a in results["seen_accuracy"]], "o-k", lw=2, label="all classes seen")
    for j, col in enumerate(zip(*results["accuracy_matrix"])):
        pts = [(i, 100 * v) for i, v in enumerate(col) if v is not None]
        if pts:
            ax.plot(*zip(*pts), ".--", alpha=0.6, label=f"exp {j} test set")
    ax.set_xlabel("after experience")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_xticks(range(n))
    ax.set_title(f"{results['strategy']}, {results['lr_bits']}-bit latents, {results['precision']}")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    acc_png = out_dir / "accuracy.png"
    fig.savefig(acc_png, dpi=110)
    plt.close(fig)

    fp = {k: v for k, v in results["footprint_bytes"].items() if k != "total" and v > 0}
    fig, ax = plt.subplots(figsize=(6, 3.2))
    names = list(fp)
    ax.barh(names, [fp[k] / 1024 for k in names], color="tab:blue")
    for i, k in enumerate(names):
        ax.text(fp[k] / 1024, i, " " + human_bytes(fp[k]), va="center", fontsize=8)
    ax.set_xlabel("KiB")
    ax.set_title(f"device memory: {human_bytes(results['footprint_bytes']['total'])} in all")
    ax.set_xlim(0, max(fp.values()) / 1024 * 1.3)
    fig.tight_layout()
    mem_png = out_dir / "memory.png"
    fig.savefig(mem_png, dpi=110)
    plt.close(fig)
    return [acc_png, mem_png]
