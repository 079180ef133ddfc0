"""Shape-aware PULP kernel cycles (hw/pulp_kernels.py) against counts worked out by hand."""

import math

import pytest
import yaml
from hypothesis import given, settings, strategies as st
from torch import nn

from tinycl.errors import TinyclError
from tinycl.hw.pulp_kernels import DwKernel, GemmKernel, core_cycles, dw_cycles, gemm_cycles, gemm_dims, split_sizes
from tinycl.hw.target import TARGET_DIR, load_target, parse_target
from tinycl.hw.tiling import compute_cycles
from tinycl.hw.workload import build_workload

# ur x uc = 2 x 4, K step 14 cycles, block 20, leftover MAC 3, leftover output 5
K32 = GemmKernel(2, 4, 1, 14, 20, 3, 5)
K16 = GemmKernel(2, 4, 2, 14, 20, 3, 5)


def test_core_cycles_blocks_and_leftovers_by_hand():
    # 2 x 10 outputs, K = 9: 1 x 2 full blocks (16 outputs) + 4 leftover outputs
    # blocks: 2 * (20 + 9 * 14) = 292; leftovers: 4 * (5 + 9 * 3) = 128
    assert core_cycles(2, 10, 9, K32) == 420
    # SIMD 2: 4 K steps of 2 + 1 odd K element done scalar for each of the 8 outputs of a block
    # block: 20 + 4 * 14 + 1 * 8 * 3 = 100; 2 blocks = 200; leftovers as fp32: 128
    assert core_cycles(2, 10, 9, K16) == 328
    assert core_cycles(0, 10, 9, K32) == 0 and core_cycles(2, 10, 0, K32) == 0


def test_gemm_splits_rows_or_columns_whichever_is_faster():
    # N=16, M=10, K=9 on 8 cores: rows -> 2 x 10 per core = 420 (above);
    # columns -> 16 x 2 per core: no full 2x4 block, 32 leftovers * 32 = 1024
    assert gemm_cycles(16, 10, 9, K32, 8) == 420
    # N=3, M=64: rows -> 1 x 64 per core = 64 leftovers * (5 + 27) = 2048;
    # columns -> 3 x 8 per core: 1 x 2 full blocks (2*(20+126)=292) + 8 leftovers (8*32=256) = 548
    assert gemm_cycles(3, 64, 9, K32, 8) == 548
    assert K32.peak(8) == pytest.approx(8 * 8 / 14)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), m=st.integers(1, 300), k=st.integers(1, 300), cores=st.sampled_from([1, 2, 8]))
def test_gemm_never_beats_the_kernel_peak(n, m, k, cores):
    vega = load_target("vega")
    for kern in (vega.gemm["fp32"], vega.gemm["fp16"]):
        assert gemm_cycles(n, m, k, kern, cores) >= n * m * k / kern.peak(cores) - 1e-9


def test_depthwise_cycles_by_hand():
    # 4 channels on 2 cores: 2 channels per core; per channel (576 MAC * 2 + 64 outputs * 5) / 4 = 368
    assert dw_cycles(4, 576, 64, DwKernel(2, 5), 2) == 2 * 368
    assert dw_cycles(5, 720, 80, DwKernel(2, 5), 2) == 3 * 368   # 5 channels: the slowest core has 3


def test_gemm_dims_and_split_sizes():
    # conv 3 -> 4 channels, 3x3 taps: forward (Cout, px, 9*Cin), input grad (Cin, in px, 9*Cout),
    # weight grad (Cout, 9*Cin, px)
    assert gemm_dims("forward", 4, 16, 9, 3, 4) == (4, 16, 27)
    assert gemm_dims("backward_input", 3, 16, 9, 3, 4) == (3, 16, 36)
    assert gemm_dims("backward_weight", 4, 16, 9, 3, 4) == (4, 27, 16)
    assert split_sizes(10, 4) == [(4, 2), (2, 1)]
    assert split_sizes(8, 4) == [(4, 2)] and split_sizes(3, 8) == [(3, 1)]


A = "assumption: test"


def _num(v):
    return {"value": v, "source": A, "range": [0, 2 * v]}


def toy_tiled():
    """2 cores, L1 1 MB (one tile per step), gemm 2x4 / K step 10 / block 5 / leftovers 2 and 3."""
    return {
        "schema": 1, "name": "toy-pulp", "kind": "tiled", "precisions": ["fp32"],
        "clock_hz": _num(1000), "cores": _num(2),
        "memory": [{"name": "L1", "scratchpad": True, "size_bytes": _num(1 << 20)},
                   {"name": "L2", "size_bytes": _num(1 << 24), "bandwidth_bytes_per_cycle": _num(1000)}],
        "efficiency": [{"precision": "fp32", "primitive": "linear", "cores": 2, "forward": 1,
                        "backward_input": 1, "backward_weight": 1, "source": A, "range": [0.5, 2]}],
        "gemm": {"fp32": {"unroll_rows": _num(2), "unroll_cols": _num(4), "simd": _num(1),
                          "k_step_cycles": _num(10), "block_cycles": _num(5), "leftover_mac_cycles": _num(2),
                          "leftover_output_cycles": _num(3)}},
        "depthwise_kernel": {"fp32": {"mac_cycles": _num(2), "pixel_cycles": _num(5)}},
        "elementwise_ops_per_cycle": {"fp32": _num(1)},
        "copy_elements_per_cycle": _num(1),
        "overheads": {"layer_cycles": _num(0), "tile_cycles": _num(0)},
        "power": {"active_w": _num(1), "idle_w": _num(0)},
    }


def test_conv_and_depthwise_compute_cycles_by_hand():
    t = parse_target(toy_tiled())
    m = nn.Sequential()
    m.add_module("pre", nn.Conv2d(4, 4, 1))                              # makes input gradients needed
    m.add_module("conv", nn.Conv2d(4, 4, 3, padding=1, bias=False))
    m.add_module("dw", nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False))
    w = build_workload(m, (4, 4, 4), None, "fp32")
    conv, dw = w.layers[1], w.layers[2]
    # conv forward: N=4, M=16, K=36 on 2 cores. rows: 2 x 16 -> 4 blocks * (5 + 36*10) = 1460;
    # columns: 4 x 8 -> 2*2 blocks, the same 1460. im2row copies: 16 px * 36 = 576 elements at 1/cycle.
    assert compute_cycles(conv, "forward", t, "fp32", 1) == 1460 + 576
    # weight gradient: N=4, M=36, K=16: rows 2 x 36 -> 9 blocks * (5 + 160) = 1485;
    # columns 4 x 18 -> 2*4 blocks (8 * 165 = 1320) + 8 leftovers * (3 + 16*2) = 280 -> 1600; min 1485
    assert compute_cycles(conv, "backward_weight", t, "fp32", 1) == 1485 + 576
    # input gradient: im2row of dY (16 px * 36) plus the flipped weights (144) copied
    assert compute_cycles(conv, "backward_input", t, "fp32", 1) == 1460 + 576 + 144
    # a tile of 2 channels x 8 pixels: 4 tiles of N=2, M=8, K=36, 1 core-row each:
    # rows -> 1 x 8: 8 leftovers * (3 + 72) = 600; columns -> 2 x 4: 1 block = 365 -> 4 * 365
    assert compute_cycles(conv, "forward", t, "fp32", 1, co=2, px=8) == 4 * 365 + 576
    # depthwise forward: 576 MACs, 64 outputs, 4 channels on 2 cores: 2 * (576*2 + 64*5) / 4 = 736;
    # im2row 16 px * 9 taps * 4 channels = 576 elements
    assert dw.macs["forward"] == 576 and dw.scratch_bytes["forward"] == 576 * 4
    assert compute_cycles(dw, "forward", t, "fp32", 1) == 736 + 576
    # depthwise weight gradient writes 4 * 9 taps: 2 * (576*2 + 36*5) / 4 = 666
    assert compute_cycles(dw, "backward_weight", t, "fp32", 1) == 666 + 576


def test_vega_peak_and_fp16_simd():
    v = load_target("vega")
    assert v.gemm["fp32"].peak(v.cores) == pytest.approx(4.39, rel=1e-3)   # the calibration figure
    assert v.gemm["fp16"].peak(v.cores) == pytest.approx(2 * 4.39, rel=1e-3)
    assert v.gemm["bf16"] == v.gemm["fp16"]
    # a block-aligned large matmul runs near the peak, a skinny one far below it
    big = gemm_cycles(256, 256, 256, v.gemm["fp32"], 8)
    skinny = gemm_cycles(3, 5, 7, v.gemm["fp32"], 8)
    assert 256 ** 3 / big > 0.97 * 4.39 and 3 * 5 * 7 / skinny < 0.5 * 4.39


@pytest.mark.parametrize("edit, word", [
    (lambda r: r["gemm"]["fp32"].update(unroll_rows=_num(2.5)), "unroll_rows"),
    (lambda r: r["gemm"]["fp32"].pop("k_step_cycles"), "k_step_cycles"),
    (lambda r: r["gemm"]["fp32"].update(bogus=_num(1)), "bogus"),
    (lambda r: r["gemm"].update(fp64=r["gemm"]["fp32"]), "fp64"),
    (lambda r: r["depthwise_kernel"]["fp32"]["mac_cycles"].update(source="guess"), "mac_cycles"),
])
def test_malformed_kernel_section_names_the_key(edit, word):
    raw = toy_tiled()
    edit(raw)
    with pytest.raises(TinyclError) as e:
        parse_target(raw)
    assert word in str(e.value) and "\n" not in str(e.value)


def test_vega_file_kernels_load_with_sources():
    raw = yaml.safe_load((TARGET_DIR / "vega.yaml").read_text())
    assert set(raw["gemm"]) == {"fp32", "fp16", "bf16"}
    t = load_target("vega")
    assert t.sources["gemm.fp32.k_step_cycles"].startswith("calibrated:")
    assert t.sources["copy_elements_per_cycle"].startswith("calibrated:")
    assert math.isclose(t.gemm["fp32"].k_step_cycles, 8 * 8 / 4.39, rel_tol=1e-3)
