"""Call the runtime's float kernels through ``export/c/kernel_driver.c`` (tests use it)."""

from __future__ import annotations

import struct
import subprocess
from importlib import resources
from pathlib import Path

import torch

DRIVER_SOURCES = ("kernel_driver.c", "tc_f32.c", "tc_f32b.c", "tc_math.c", "tc_rng.c", "tc_int8.c")
OPS = {"conv_fwd": 1, "conv_bwd_in": 2, "conv_bwd_w": 3, "linear_fwd": 4, "linear_bwd_in": 5, "linear_bwd_w": 6,
       "bn_train_fwd": 7, "bn_train_bwd": 8, "bn_eval_fwd": 9, "bn_eval_bwd": 10, "maxpool_fwd": 11,
       "maxpool_bwd": 12, "avgpool_fwd": 13, "avgpool_bwd": 14, "gap_fwd": 15, "gap_bwd": 16, "softmax_ce": 17,
       "exp_log": 18, "sgd": 19, "rng": 20, "pack": 21, "mbqm": 22}


def build_driver(out_dir: Path, cc: str = "gcc") -> Path:
    """Compile the driver with the project's host flags; returns the executable."""
    src = resources.files("tinycl.export") / "c"
    out_dir = Path(out_dir)
    for name in DRIVER_SOURCES + ("tinycl_rt.h",):
        (out_dir / name).write_bytes((src / name).read_bytes())
    exe = out_dir / "kernel_driver"
    subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-ffp-contract=off", "-o", str(exe),
                    *[str(out_dir / s) for s in DRIVER_SOURCES], "-lm"], check=True, capture_output=True)
    return exe


def call(exe: Path, op: str, ints: list[int], arrays: list[torch.Tensor]) -> list[torch.Tensor]:
    """Run one kernel; returns its output arrays as float32 tensors (raw bits)."""
    ints = list(ints) + [0] * (16 - len(ints))
    data = struct.pack("<ii", OPS[op], len(ints)) + struct.pack(f"<{len(ints)}I", *[v & 0xFFFFFFFF for v in ints])
    data += struct.pack("<i", len(arrays))
    for a in arrays:  # int32 arrays travel as their raw bits
        a = a.detach().contiguous().reshape(-1)
        a = a.view(torch.float32) if a.dtype == torch.int32 else a.to(torch.float32)
        data += struct.pack("<i", a.numel()) + a.numpy().tobytes()
    res = subprocess.run([str(exe)], input=data, capture_output=True, check=True).stdout
    outs, o = [], 0
    while o < len(res):
        (n,) = struct.unpack_from("<i", res, o)
        outs.append(torch.frombuffer(bytearray(res[o + 4:o + 4 + 4 * n]), dtype=torch.float32).clone())
        o += 4 + 4 * n
    return outs


def geom(x_shape, w_shape, y_shape, stride, padding, groups) -> list[int]:
    """The 13 ints of ``tc_conv`` plus the batch size."""
    n, cin, h, w = x_shape
    _, cout, ho, wo = y_shape
    return [cin, h, w, cout, ho, wo, w_shape[-2], w_shape[-1], stride[0], stride[1], padding[0], padding[1],
            groups, n]
