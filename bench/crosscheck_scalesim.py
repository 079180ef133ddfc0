"""Cross-check: the forward conv layers of ResNet8 through SCALE-Sim and through tinycl.

tinycl side: a flat target made for this check, an R x C MAC array at full utilisation
(MACs / (R*C) cycles, no overheads, no bandwidth limit) -- the flat mapping at full
utilisation, the first-order model the tinycl-asic and eta-fpga files used before they ran their
accelerator models (hw/accel_tinycl, hw/accel_eta). SCALE-Sim side: the same array, output stationary,
cycle-level with fill and drain. Agreement = tinycl cycles / SCALE-Sim compute cycles.

SCALE-Sim lives in its own venv (never the project's):
    python3 -m venv /tmp/scalesim-venv && /tmp/scalesim-venv/bin/pip install scalesim "numpy<2"
(scalesim 3.0.0 fails under numpy 2.x in read_buffer.prefetch_active_buffer.)
Run:  .venv/bin/python bench/crosscheck_scalesim.py [--rows 8 --cols 8]
      [--scalesim-python /tmp/scalesim-venv/bin/python]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import tempfile
from pathlib import Path

from tinycl.hw.cost import profile
from tinycl.hw.target import parse_target
from tinycl.models.registry import create

A = "derived: the cross-check array, fixed by construction"

CFG = """[general]
run_name = tinycl_xcheck

[architecture_presets]
ArrayHeight : {rows}
ArrayWidth : {cols}
IfmapSramSzkB : 1024
FilterSramSzkB : 1024
OfmapSramSzkB : 1024
IfmapOffset : 0
FilterOffset : 10000000
OfmapOffset : 20000000
Bandwidth : 64
Dataflow : os
ReadRequestBuffer : 32
WriteRequestBuffer : 32

[layout]
IfmapCustomLayout : False
IfmapSRAMBankBandwidth : 64
IfmapSRAMBankNum : 1
IfmapSRAMBankPort : 2
FilterCustomLayout : False
FilterSRAMBankBandwidth : 64
FilterSRAMBankNum : 1
FilterSRAMBankPort : 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth : USER
UseRamulatorTrace : False
"""

RUNNER = """
import sys, contextlib, io
from scalesim.scale_sim import scalesim
s = scalesim(save_disk_space=True, verbose=False, config=sys.argv[1], topology=sys.argv[2], layout=sys.argv[4])
with contextlib.redirect_stdout(io.StringIO()):
    s.run_scale(top_path=sys.argv[3])
"""


def array_target(rows: int, cols: int):
    n = rows * cols
    return parse_target({
        "schema": 1, "name": f"array{rows}x{cols}", "kind": "flat", "precisions": ["fp32"],
        "clock_hz": {"value": 1.0, "source": A}, "cores": {"value": 1, "source": A},
        "memory": [{"name": "SRAM", "size_bytes": {"value": 1 << 40, "source": A}}],
        "efficiency": [{"precision": "fp32", "primitive": "conv", "cores": 1, "forward": n,
                        "backward_input": n, "backward_weight": n, "source": A}],
        "elementwise_ops_per_cycle": {"fp32": {"value": n, "source": A}},
        "copy_elements_per_cycle": {"value": 1e18, "source": A},
        "overheads": {"layer_cycles": {"value": 0, "source": A}, "tile_cycles": {"value": 0, "source": A}},
        "power": {"active_w": {"value": 1.0, "source": A}, "idle_w": {"value": 0, "source": A}},
    })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--cols", type=int, default=8)
    ap.add_argument("--scalesim-python", default="/tmp/scalesim-venv/bin/python")
    a = ap.parse_args()
    net = create("resnet8")
    p = profile(net, net.input_shape, array_target(a.rows, a.cols), "fp32", None, batch=1)
    convs = {}
    for mod_name, mod in net.named_modules():
        if mod.__class__.__name__ == "Conv2d":
            convs[mod_name] = mod
    ours = {r["name"]: r["step_cycles"]["forward"] for r in p["layers"] if r["name"] in convs}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "x.cfg").write_text(CFG.format(rows=a.rows, cols=a.cols))
        # SCALE-Sim has no padding: pass the padded input size. The shapes come from the trace.
        from tinycl.hw.workload import build_workload
        w = build_workload(net, net.input_shape, None, "fp32")
        with open(d / "topo.csv", "w") as f:
            f.write("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,\n")
            for l in w.layers:
                if l.name not in convs:
                    continue
                c = convs[l.name]
                ph, pw = c.padding
                f.write(f"{l.name.replace('.', '_')}, {l.in_shape[1] + 2 * ph}, {l.in_shape[2] + 2 * pw}, "
                        f"{c.kernel_size[0]}, {c.kernel_size[1]}, {c.in_channels}, {c.out_channels}, {c.stride[0]},\n")
        (d / "layout.csv").write_text("Layer name,\n")   # header only: default layouts
        subprocess.run([a.scalesim_python, "-c", RUNNER, str(d / "x.cfg"), str(d / "topo.csv"), str(d),
                        str(d / "layout.csv")],
                       check=True)
        rep = next(d.rglob("COMPUTE_REPORT.csv"))
        with open(rep) as f:
            rows = list(csv.reader(f))
    head = [h.strip() for h in rows[0]]
    i_cyc = head.index("Total Cycles") if "Total Cycles" in head else 1
    i_util = next((i for i, h in enumerate(head) if "Compute Util" in h), None)
    print(f"ResNet8 forward convs on a {a.rows}x{a.cols} output-stationary array")
    print(f"{'layer':<22}{'tinycl cycles':>15}{'SCALE-Sim':>12}{'ratio':>8}{'SS util %':>11}")
    tot_t = tot_s = 0
    for name, r in zip(ours, rows[1:]):
        ss = float(r[i_cyc])
        util = f"{float(r[i_util]):.1f}" if i_util is not None else "-"
        tot_t += ours[name]
        tot_s += ss
        print(f"{name:<22}{ours[name]:>15,.0f}{ss:>12,.0f}{ours[name] / ss:>8.2f}{util:>11}")
    print(f"{'total':<22}{tot_t:>15,.0f}{tot_s:>12,.0f}{tot_t / tot_s:>8.2f}")


if __name__ == "__main__":
    main()
