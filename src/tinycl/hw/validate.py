"""The validation table: published figures beside the cost pipeline's figures.

Every row is a function of the spec numbers (``overrides``: ``{"<file>:<key>": value}``), so the
same row can be re-run with one number moved (sensitivity, solving, the calibration check).
Its **kind** is decided from the spec files, not written by hand:

- ``calibration``: a number of the files names this figure in ``fitted_to`` (no validation);
- ``depends on calibration``: the figure moves with a fitted number that was fitted on the same
  workload (the fit re-expressed, e.g. a latency from the fitted cycles), or the row restates
  another row's modelled value that moves with a fitted number (``derived_from``);
- ``prediction``: everything else with a published figure; only these count in the score;
- ``check``: the paper's configuration is too unknown to predict; the row shows what the model implies.

``docs/validation.md`` is the printed table (``tinycl validate``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from statistics import mean, median
from typing import Callable

from torch import nn

from tinycl.hw.cost import mac_per_cycle, profile_workload, resolve_target
from tinycl.hw.energy import battery_life_hours
from tinycl.hw.measured import battery
from tinycl.hw.workload import build_workload
from tinycl.models.registry import create

SCORE_BAND = 0.25   # a prediction "holds" within +-25 %


@dataclass
class Row:
    """One published figure and how the model computes it (``compute(overrides) -> value``)."""

    figure: str
    published: float
    unit: str
    compute: Callable[[dict], float]
    files: tuple            # spec files the value reads ("vega", "eta-array", "tinycl_pu", ...)
    workload: str           # what it runs: rows sharing it are the same data
    config: str
    derived_from: str | None = None   # restates that row's modelled value x assumptions
    check: bool = False
    solve: list = field(default_factory=list)   # [(keys moved together, {other key: value})]


# ---------------------------------------------------------------- cached workloads

@functools.lru_cache(maxsize=None)
def _net(name: str) -> nn.Module:
    return create(name)


@functools.lru_cache(maxsize=None)
def _work(name: str, precision: str, latent=None, batch=1, n_replays=0, lr_bits=8, step_batch=None):
    net = _net(name)
    return build_workload(net, net.input_shape, latent, precision, batch, n_replays, lr_bits, step_batch)


def _prof(name, target, ov, precision, latent=None, batch=1, n_replays=0, lr_bits=8, step_batch=None) -> dict:
    w = _work(name, precision, latent, batch, n_replays, lr_bits, step_batch)
    return profile_workload(w, resolve_target(target, ov), model=_net(name), overrides=ov)


@functools.lru_cache(maxsize=None)
def _conv_model(cin, cout, hw, k):
    m = nn.Sequential()
    m.add_module("pre", nn.Conv2d(cin, cin, 1))   # makes the conv's input gradient needed
    m.add_module("conv", nn.Conv2d(cin, cout, k, padding=k // 2, bias=False))
    return m


@functools.lru_cache(maxsize=None)
def _conv_work(cin, cout, hw, k, precision):
    return build_workload(_conv_model(cin, cout, hw, k), (cin, hw, hw), "pre", precision, 1)


@functools.lru_cache(maxsize=None)
def _pw_work():
    m = nn.Sequential()
    m.add_module("pw", nn.Conv2d(256, 256, 1, bias=False))
    return build_workload(m, (256, 16, 16), None, "fp32", 1)


# ---------------------------------------------------------------- the rows' model values

def pulp_peak(ov):
    p = profile_workload(_pw_work(), resolve_target("vega", ov))
    return p["layers"][0]["macs"]["forward"] / p["layers"][0]["step_cycles"]["forward"]


SHAPES = [(16, 16, 32, 3), (32, 32, 16, 3), (64, 64, 8, 3), (128, 128, 8, 3)]


def fp16_ratio(ov):
    t = resolve_target("vega", ov)

    def cyc(s, prec):
        p = profile_workload(_conv_work(*s, prec), t)
        return next(r for r in p["layers"] if r["name"] == "conv")["cycles"]
    return max(cyc(s, "fp32") / cyc(s, "fp16") for s in SHAPES)


def fgcs(name, what):
    def f(ov):
        p = _prof(name, "vega", ov, "fp16")
        return mac_per_cycle(p) if what == "mpc" else p["total"]["latency_s"] * 1e3
    return f


LR = dict(batch=128, n_replays=1500, lr_bits=8, step_batch=1)


def latents(fast):
    return ("conv5_4/dw",) if fast else ("conv5_2/dw", "conv5_4/dw", "conv5_6/dw")


def vega_stm32(what, fast):
    def f(ov):
        vals = []
        for lat in latents(fast):
            pv = _prof("mobilenet-v1", "vega", ov, "fp32", lat, **LR)
            ps = _prof("mobilenet-v1", "stm32l4", ov, "fp32", lat, **LR)
            key = "latency_s" if what == "time" else "energy_j"
            vals.append(ps["total"][key] / pv["total"][key])
        return mean(vals)
    return f


def lifetime(fast):
    def f(ov):
        ps = [_prof("mobilenet-v1", "vega", ov, "fp32", lat, **LR) for lat in latents(fast)]
        e, t = mean(p["total"]["energy_j"] for p in ps), mean(p["total"]["latency_s"] for p in ps)
        return battery_life_hours(e, 1, *battery(), resolve_target("vega", ov).idle_power_w, t)
    return f


def lr_memory(ov):
    p = _prof("mobilenet-v1", "vega", ov, "fp32", "conv5_4/dw", **LR)
    return sum(p["memory"]["groups"].values()) / 1e6


def epoch(target):
    def f(ov):
        return _prof("tinycl-net", target, ov, "fp32")["total"]["latency_s"] * 50_000
    return f


ETA_PUBLISHED = (("vgg-cifar", 610.98), ("resnet20", 658.64), ("resnet18", 811.24))


def eta_gops(name):
    def f(ov):
        from tinycl.hw.accel_eta import load_array
        b = load_array(overrides=ov).batch
        p = _prof(name, "eta-fpga", ov, "int8", batch=b)
        return 2 * mac_per_cycle(p, trained_only=False) * p["clock_hz"] / 1e9
    return f


# ---------------------------------------------------------------- the table

def table_rows(fast: bool = False) -> list[Row]:
    """Every row of the table, unevaluated. ``fast``: one latent layer instead of three."""
    lr_cfg = (f"MobileNetV1 128x128, latent {', '.join(latents(fast))} (mean), FP32, 128 new images, 1500 LRs "
              "at 8 bit, training steps of 1 sample (PULP-TrainLib deployer, assumption); STM32L4 from "
              "Cortex-M4 timings (assumption)")
    fgcs_cfg = "zoo model, whole network trained, batch 1, shape-aware VEGA kernels"
    rs = [
        Row("PULP-TrainLib peak MAC/clk, 8 cores FP32", 4.39, "MAC/clk", pulp_peak, ("vega",), "vega:pw256",
            "forward of a 1x1 conv 256->256 on 16x16 (tiled, with DMA and overheads)"),
        Row("FP16 over FP32, one Conv2D training step (up to)", 1.72, "x", fp16_ratio, ("vega",), "vega:convs",
            "max over 3x3 convs 16/32/64/128 ch on 32/16/8/8 px; shape-aware gemm, fp16 = 2 lanes per K step, "
            "im2row copies at the same cost in both precisions"),
        Row("resnet8 FP16 training step MAC/clk", 3.11, "MAC/clk", fgcs("resnet8", "mpc"), ("vega",),
            "vega:resnet8", fgcs_cfg),
        Row("resnet8 FP16 training step latency", 17.1, "ms", fgcs("resnet8", "ms"), ("vega",), "vega:resnet8",
            "as above at the assumed 450 MHz (the FGCS platform clock is not published)",
            solve=[(("vega:clock_hz",), {})]),
        Row("ds-cnn FP16 training step MAC/clk", 0.81, "MAC/clk", fgcs("ds-cnn", "mpc"), ("vega",), "vega:ds-cnn",
            fgcs_cfg, solve=[(("vega:depthwise_kernel.fp16.mac_cycles",), {}),
                             (("vega:overheads.layer_cycles",), {})]),
        Row("ds-cnn FP16 training step latency", 6.4, "ms", fgcs("ds-cnn", "ms"), ("vega",), "vega:ds-cnn",
            "the MAC/clk row's cycles at the assumed 450 MHz", derived_from="ds-cnn FP16 training step MAC/clk",
            solve=[(("vega:clock_hz",), {})]),
        Row("VEGA over STM32L4, latent-replay learning time", 65, "x", vega_stm32("time", fast),
            ("vega", "stm32l4"), "mobilenet-lr", lr_cfg),
        Row("VEGA over STM32L4, energy", 37, "x", vega_stm32("energy", fast), ("vega", "stm32l4"), "mobilenet-lr",
            "the time ratio x the assumed powers (active power x time on both)",
            derived_from="VEGA over STM32L4, latent-replay learning time"),
        Row("lifetime at one mini-batch a minute", 535, "h", lifetime(fast), ("vega",), "mobilenet-lr",
            "battery not published: assumed {:g} mAh at {:g} V (hw/measured/battery.yaml); the event as above"
            .format(*battery()),
            check=True),
        Row("total memory of latent-replay CL (bound)", 64.0, "MB", lr_memory, ("vega",), "mobilenet-lr-mem",
            "all tensor groups for latent conv5_4/dw, 1500 LRs at 8 bit, 128 new images, steps of 1, FP32 "
            "(published: 'under 64 MB')"),
    ]
    return rs + accelerator_rows()


def accelerator_rows() -> list[Row]:
    """The TinyCL, P100 and ETA rows."""
    rs = [
        Row("TinyCL epoch, CIFAR-10", 1.76, "s", epoch("tinycl-asic"), ("tinycl-asic", "tinycl_pu"), "tinycl-net",
            "zoo tinycl-net (layer sizes assumed), batch 1, 50,000 samples, no replay; TinyCL window-PU model "
            "(hw/accel_tinycl, snake order): 9 MACs and 100 MHz assumed",
            solve=[(("tinycl_pu:mac_units", "tinycl_pu:memories.weights.port_words",
                     "tinycl_pu:memories.activations.port_words", "tinycl_pu:memories.gradients.port_words",
                     "tinycl_pu:memories.rehearsal.port_words"), {}),
                   (("tinycl-asic:clock_hz",), {})]),
        Row("P100 epoch of the same model", 103, "s", epoch("p100"), ("p100",), "tinycl-net",
            "batch 1 (assumed), 5 us launch per primitive call (assumed), host/framework time per step 0 "
            "(assumption; see --solve)", solve=[(("p100:overheads.step_cycles",), {})]),
    ]
    for name, gops in ETA_PUBLISHED:
        rs.append(Row(f"ETA GOPS, {name}", gops, "GOPS", eta_gops(name), ("eta-fpga", "eta-array"), f"eta:{name}",
                      "ETA PE-array model (hw/accel_eta, 9x16x16 PEs at 200 MHz), 8-bit training step at the "
                      "file's batch (32)",
                      solve=[(("eta-array:noc.bytes_per_cycle",), {}), (("eta-array:training.batch",), {}),
                             (("eta-array:noc.resend_pixels",), {})]))
    return rs


def spec_params(files) -> dict:
    """``{"<file>:<key>": Param}`` of the named spec files."""
    from tinycl.hw.accel_eta import load_array
    from tinycl.hw.accel_tinycl import load_arch
    out = {}
    for f in files:
        if f == "eta-array":
            ps = load_array().params
        elif f == "tinycl_pu":
            ps = load_arch().params
        else:
            ps = resolve_target(f).params
        out.update({f"{f}:{k}": p for k, p in ps.items()})
    return out


def nudge(p) -> float:
    """A small move of a number (+1 % or +1 for whole numbers) to test whether a figure depends on it."""
    return p.value + 1 if p.value == int(p.value) and p.value >= 1 else p.value * 1.01 + 1e-12


def classify(rs: list[Row], values: dict) -> dict:
    """Kind and the fitted numbers each row moves with (see the module docstring)."""
    by = {r.figure: r for r in rs}
    fitted = {k: p for k, p in spec_params({f for r in rs for f in r.files}).items() if p.tag == "calibrated"}
    out = {}
    for r in rs:
        moves = []
        for k, p in fitted.items():
            if k.split(":")[0] in r.files and not math.isclose(r.compute({k: nudge(p)}), values[r.figure],
                                                                rel_tol=1e-9):
                moves.append(k)
        out[r.figure] = {"moves_with": moves, "fitted_to": sorted({fitted[k].fitted_to for k in moves})}
    for r in rs:
        info = out[r.figure]
        same = [k for k in info["moves_with"] if fitted[k].fitted_to in by
                and by[fitted[k].fitted_to].workload == r.workload and fitted[k].fitted_to != r.figure]
        parent = out.get(r.derived_from, {}).get("moves_with") if r.derived_from else None
        if any(p.fitted_to == r.figure for p in fitted.values()):
            kind = "calibration"
        elif r.check:
            kind = "check"
        elif same or parent:
            kind = "depends on calibration"
        else:
            kind = "prediction"
        info["kind"] = kind
        info["fits"] = sorted(k for k, p in fitted.items() if p.fitted_to == r.figure)
        info["same_workload"] = same
    return out


def rows(fast: bool = False) -> list[dict]:
    """Evaluate and classify every row; the measured rows (Cortex-M4F emulator) come last."""
    from tinycl.hw.measured import measured_rows
    return _model_rows(fast) + measured_rows()


def _model_rows(fast: bool) -> list[dict]:
    rs = table_rows(fast)
    values = {r.figure: r.compute({}) for r in rs}
    kinds = classify(rs, values)
    out = []
    for r in rs:
        v, k = values[r.figure], kinds[r.figure]
        err = (v - r.published) / r.published if r.published else None
        note = r.config
        if k["kind"] == "calibration":
            note += "; fits " + ", ".join(k["fits"])
        elif k["kind"] == "depends on calibration":
            why = (f"restates '{r.derived_from}'" if r.derived_from else
                   "moves with " + ", ".join(k["same_workload"]) + " fitted on this workload")
            note += f"; {why}"
        elif k["moves_with"]:
            note += "; uses " + ", ".join(k["moves_with"]) + " fitted on other data"
        out.append({"figure": r.figure, "published": r.published, "modelled": v, "unit": r.unit, "error": err,
                    "kind": k["kind"], "config": note, "moves_with": k["moves_with"],
                    "fitted_to": k["fitted_to"]})
    return out


def score(rs: list[dict]) -> dict:
    """Only true predictions count: how many hold within +-SCORE_BAND, and the median |error|."""
    errs = [abs(r["error"]) for r in rs if r["kind"] == "prediction" and r["error"] is not None]
    return {"predictions": len(errs), "within": sum(e <= SCORE_BAND for e in errs), "band": SCORE_BAND,
            "median_abs_error": median(errs) if errs else math.nan}


def format_table(rs: list[dict]) -> str:
    """The rows as a Markdown table, and the score line."""
    lines = ["| figure | published | modelled | error | kind | configuration / assumptions |",
             "|---|---|---|---|---|---|"]
    for r in rs:
        mod = "-" if r["modelled"] is None else f"{r['modelled']:.3g} {r['unit']}".strip()
        err = "-" if r["error"] is None or math.isnan(r["error"]) else f"{r['error']:+.0%}"
        lines.append(f"| {r['figure']} | {r['published']} {r['unit']} | {mod} | {err} | {r['kind']} | {r['config']} |")
    s = score(rs)
    lines.append(f"\nScore (predictions only): {s['within']} of {s['predictions']} within +-{s['band']:.0%}; "
                 f"median |error| {s['median_abs_error']:.0%}.")
    return "\n".join(lines)
