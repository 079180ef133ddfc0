"""The validation table: published figures beside the cost model's figures.

Each row says whether the published figure was used to *calibrate* a target file (then it is
no validation) or is a *prediction* (the model never saw it), or is *pending* / a *check*
where the paper's configuration is too unknown for an honest prediction. Assumed
configurations are written in the row. ``docs/validation.md`` records the printed table.
"""

from __future__ import annotations

import math
from statistics import mean

from torch import nn

from tinycl.hw.cost import mac_per_cycle, profile
from tinycl.hw.energy import battery_life_hours
from tinycl.hw.target import load_target
from tinycl.models.registry import create


def _row(figure, published, modelled, kind, config, unit=""):
    err = None
    if isinstance(published, (int, float)) and isinstance(modelled, (int, float)) and published:
        err = (modelled - published) / published
    return {"figure": figure, "published": published, "modelled": modelled, "unit": unit,
            "error": err, "kind": kind, "config": config}


def _single_conv_step_cycles(cin, cout, hw, k, precision):
    m = nn.Sequential()
    m.add_module("pre", nn.Conv2d(cin, cin, 1))   # makes the conv's input gradient needed
    m.add_module("conv", nn.Conv2d(cin, cout, k, padding=k // 2, bias=False))
    p = profile(m, (cin, hw, hw), "vega", precision, "pre", batch=1)
    return next(r for r in p["layers"] if r["name"] == "conv")["cycles"]


def rows(fast: bool = False) -> list[dict]:
    """Compute every row. ``fast`` uses fewer latent layers for the VEGA/STM32L4 average."""
    out = []
    # -- calibration: PULP-TrainLib peak, FP32 pointwise forward on a large layer
    m = nn.Sequential()
    m.add_module("pw", nn.Conv2d(256, 256, 1, bias=False))
    p = profile(m, (256, 16, 16), "vega", "fp32", None, batch=1)
    fwd = p["layers"][0]
    out.append(_row("PULP-TrainLib peak MAC/clk, 8 cores FP32", 4.39,
                    fwd["macs"]["forward"] / fwd["step_cycles"]["forward"], "calibration",
                    "forward of a 1x1 conv 256->256 on 16x16 (tiled, with DMA and overheads); sets the "
                    "VEGA gemm k_step_cycles (2x4 block)", "MAC/clk"))
    # -- prediction: FP16 over FP32 on one conv training step ("up to")
    shapes = [(16, 16, 32, 3), (32, 32, 16, 3), (64, 64, 8, 3), (128, 128, 8, 3)]
    ratios = [_single_conv_step_cycles(*s, "fp32") / _single_conv_step_cycles(*s, "fp16") for s in shapes]
    out.append(_row("FP16 over FP32, one Conv2D training step (up to)", 1.72, max(ratios), "prediction",
                    "max over 3x3 convs 16/32/64/128 ch on 32/16/8/8 px; shape-aware gemm, fp16 = 2 lanes per "
                    "K step, im2row copies at the same cost in both precisions", "x"))
    # -- predictions: FGCS 2023 end-to-end FP16 single-sample training steps
    for name, mpc, ms, kind in (("resnet8", 3.11, 17.1, "calibration"), ("ds-cnn", 0.81, 6.4, "prediction")):
        net = create(name)
        p = profile(net, net.input_shape, "vega", "fp16", None, batch=1)
        how = ("sets the VEGA im2row copy cost (copy_elements_per_cycle)" if kind == "calibration"
               else "nothing fitted to it")
        out.append(_row(f"{name} FP16 training step MAC/clk", mpc, mac_per_cycle(p), kind,
                        f"zoo model, whole network trained, batch 1, shape-aware VEGA kernels; {how}", "MAC/clk"))
        out.append(_row(f"{name} FP16 training step latency", ms, p["total"]["latency_s"] * 1e3, "prediction",
                        "as above at the assumed 450 MHz (the FGCS platform clock is not published)", "ms"))
    # -- predictions: 2021 latent replay, VEGA vs STM32L4, MobileNetV1 128x128
    net = create("mobilenet-v1")
    latents = ["conv5_4/dw"] if fast else ["conv5_2/dw", "conv5_4/dw", "conv5_6/dw"]
    t_ratio, e_ratio, vega_e, vega_t = [], [], [], []
    for lat in latents:
        kw = dict(batch=128, n_replays=1500, lr_bits=8, step_batch=1)
        pv = profile(net, net.input_shape, "vega", "fp32", lat, **kw)
        ps = profile(net, net.input_shape, "stm32l4", "fp32", lat, **kw)
        t_ratio.append(ps["total"]["latency_s"] / pv["total"]["latency_s"])
        e_ratio.append(ps["total"]["energy_j"] / pv["total"]["energy_j"])
        vega_e.append(pv["total"]["energy_j"])
        vega_t.append(pv["total"]["latency_s"])
        if lat == "conv5_4/dw":
            mem = sum(pv["memory"]["groups"].values())
    cfg = (f"MobileNetV1 128x128, latent {', '.join(latents)} (mean), FP32, 128 new images, 1500 LRs at 8 bit, "
           "training steps of 1 sample (PULP-TrainLib deployer, assumption); STM32L4 from Cortex-M4 timings (assumption)")
    out.append(_row("VEGA over STM32L4, latent-replay learning time", 65, mean(t_ratio), "prediction", cfg, "x"))
    out.append(_row("VEGA over STM32L4, energy", 37, mean(e_ratio), "prediction", cfg, "x"))
    vega = load_target("vega")
    need_wh = mean(vega_e) * 60 * 535 / 3600 + vega.idle_power_w * 535
    out.append(_row("lifetime at one mini-batch a minute", 535,
                    battery_life_hours(mean(vega_e), 1, 3300, 3.7, vega.idle_power_w, mean(vega_t)),
                    "check", f"battery not published: assumed 3300 mAh at 3.7 V; 535 h needs "
                             f"{need_wh:.2f} Wh with the modelled {mean(vega_e):.3f} J/event", "h"))
    out.append(_row("total memory of latent-replay CL (bound)", 64.0, mem / 1e6, "prediction",
                    "all tensor groups for latent conv5_4/dw, 1500 LRs at 8 bit, 128 new images, steps of 1, FP32 "
                    "(published: 'under 64 MB')", "MB"))
    # -- TinyCL and P100: first-order models, key parameters assumed
    net = create("tinycl-net")
    epoch = {}
    for t in ("tinycl-asic", "p100"):
        p = profile(net, net.input_shape, t, "fp32", None, batch=1)
        epoch[t] = p["total"]["latency_s"] * 50000
    out.append(_row("TinyCL epoch, CIFAR-10 (first-order)", 1.76, epoch["tinycl-asic"], "prediction",
                    "zoo tinycl-net, batch 1, 50,000 samples; array (9 MAC) and 100 MHz clock assumed", "s"))
    out.append(_row("P100 epoch of the same model (first-order)", 103, epoch["p100"], "prediction",
                    "batch 1 (assumed), 5 us launch per primitive call (assumed); no framework/host time", "s"))
    out += eta_rows()
    return out


ETA_PUBLISHED = (("vgg-cifar", 610.98), ("resnet20", 658.64), ("resnet18", 811.24))
ETA_CALIBRATION = "resnet20"   # the ETA model's array geometry was chosen on it (docs/eta.md)
ETA_BATCH = 32                 # the ETA model's assumed batch (the paper's is not in the abstract)


def eta_rows() -> list[dict]:
    """ETA GOPS from the PE-array model (``tinycl.hw.accel_eta``), or pending if it is unavailable."""
    try:
        from tinycl.hw.accel_eta import eta_training_step, load_array
        cfg = load_array()
    except (ImportError, AttributeError) as e:   # the model is built in parallel; keep the table printable
        eta = load_target("eta-fpga")
        peak = 2 * eta.macs_per_cycle("int8", "conv", "forward") * eta.clock_hz / 1e9
        return [_row(f"ETA GOPS, {name}", gops, None, "pending",
                     f"pending the ETA PE-array model ({type(e).__name__}); first-order DSP bound is "
                     f"{peak:.0f} GOPS", "GOPS") for name, gops in ETA_PUBLISHED]
    out = []
    for name, gops in ETA_PUBLISHED:
        net = create(name)
        r = eta_training_step(net, net.input_shape, cfg, ETA_BATCH)
        kind = "calibration" if name == ETA_CALIBRATION else "prediction"
        how = "array geometry chosen on it" if kind == "calibration" else "nothing fitted to it"
        out.append(_row(f"ETA GOPS, {name}", gops, r["gops"], kind,
                        f"ETA PE-array model (hw/accel_eta, {cfg.pes} PEs at {cfg.clock_hz / 1e6:.0f} MHz), "
                        f"8-bit training step, batch {ETA_BATCH} (assumed); {how}", "GOPS"))
    return out


def format_table(rs: list[dict]) -> str:
    """The rows as a Markdown table."""
    lines = ["| figure | published | modelled | error | kind | configuration / assumptions |",
             "|---|---|---|---|---|---|"]
    for r in rs:
        mod = "-" if r["modelled"] is None else f"{r['modelled']:.3g} {r['unit']}".strip()
        err = "-" if r["error"] is None or math.isnan(r["error"]) else f"{r['error']:+.0%}"
        lines.append(f"| {r['figure']} | {r['published']} {r['unit']} | {mod} | {err} | {r['kind']} | {r['config']} |")
    return "\n".join(lines)
