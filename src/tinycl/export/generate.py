"""Write a self-contained C99 project from a :class:`Plan`, and the test program's file formats.

Files: the runtime (``export/c``: kernels, engine, start-up code, linker script, test
program), ``tinycl.h`` (API and sizes), ``tc_config.h`` (the back's element type: float,
or ``_Float16`` for an FP16 plan), ``model.c`` (front weights as ``const`` arrays;
back weights, momenta, BN statistics, replay memory and RNG state as initialised
data), ``Makefile`` (``make host``, ``make m4``, ``make run-host``, ``make run-m4``).
Nothing is written unless the whole project could be generated.
"""

from __future__ import annotations

import math
import shutil
import struct
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from tinycl.errors import TinyclError

from .driver import config_h
from .plan import Plan, check_plan
from .planner import arena_bytes, front_offsets

RUNTIME = ("tinycl_rt.h", "tc_engine.h", "tc_io.h", "tc_rng.c", "tc_math.c", "tc_f32.c", "tc_f32b.c", "tc_int8.c",
           "tc_engine.c", "main.c", "io_host.c", "io_semi.c", "startup_m4.c", "an386.ld")
SOURCES = "model.c tc_engine.c tc_f32.c tc_f32b.c tc_int8.c tc_math.c tc_rng.c main.c"
CFLAGS = "-std=c99 -Wall -Wextra -Werror -O2 -ffp-contract=off"
M4FLAGS = "-mcpu=cortex-m4 -mfpu=fpv4-sp-d16 -mfloat-abi=hard -mthumb"
M4_FP16 = "-mfp16-format=ieee"   # arm-none-eabi-gcc: _Float16 as IEEE binary16 (storage; arithmetic in float)
QEMU = ("qemu-system-arm -M mps2-an386 -nographic -monitor none -serial none -icount shift=0 "
        "-semihosting-config enable=on,target=native -kernel tinycl_m4.elf")
FKIND = {"conv_int8": "F_CONV", "linear_int8": "F_LINEAR", "add_int8": "F_ADD", "maxpool_int8": "F_MAXPOOL",
         "avgpool_int8": "F_AVGPOOL", "gap_int8": "F_GAP", "clamp_int8": "F_CLAMP", "flatten": "F_FLATTEN"}
SCALER = {None: 0, "static": 1, "dynamic": 2}
BKIND = {"conv2d": "B_CONV", "linear": "B_LINEAR", "batchnorm": "B_BN", "relu": "B_RELU", "relu6": "B_RELU6",
         "add": "B_ADD", "maxpool": "B_MAXPOOL", "avgpool": "B_AVGPOOL", "gap": "B_GAP", "flatten": "B_FLATTEN"}


def f32(v: float) -> str:
    """A float32 value as an exact C hex literal."""
    x = float(np.float32(v))
    if not math.isfinite(x):
        raise TinyclError(f"C export: non-finite value {x} in the learner state")
    return x.hex() + "f"


def _arr(ctype: str, name: str, t, const: bool = True, size: int | None = None) -> str:
    vals = t.reshape(-1).tolist() if isinstance(t, torch.Tensor) else list(t)
    body = ",".join(f32(v) for v in vals) if ctype == "float" else ",".join(str(int(v)) for v in vals)
    n = size if size is not None else max(len(vals), 1)
    return f"{'static const' if const else 'static'} {ctype} {name}[{n}] = {{{body or '0'}}};\n"


def _geom(shape_in, shape_out, at) -> str:
    cin, h, w = (tuple(shape_in) + (1, 1))[:3]
    cout, ho, wo = (tuple(shape_out) + (1, 1))[:3]
    (kh, kw), (sh, sw), (ph, pw) = at.get("kernel", (1, 1)), at.get("stride", (1, 1)), at.get("padding", (0, 0))
    return f"{{{cin},{h},{w},{cout},{ho},{wo},{kh},{kw},{sh},{sw},{ph},{pw},{at.get('groups', 1)}}}"


def _front(plan: Plan) -> str:
    out, rows = [], []
    for i, op in enumerate(plan.front):
        at, p = op.attrs, op.params
        names = {}
        for k, ctype in (("w", "int8_t"), ("bias", "int32_t"), ("mult", "int32_t"), ("shift", "int32_t"),
                         ("add", "int32_t")):
            if k in p:
                names[k] = f"f{i}_{k}"
                out.append(_arr(ctype, names[k], p[k]))
        s_in, s_out = plan.front_shapes[op.inputs[0]], plan.front_shapes[op.output]
        in1 = op.inputs[1] if len(op.inputs) > 1 else 0
        ptr = ",".join(names.get(k, "0") for k in ("w", "bias", "mult", "shift", "add"))
        rows.append(f"  {{{FKIND[op.kind]},{op.inputs[0]},{in1},{op.output},{_geom(s_in, s_out, at)},{ptr},"
                    f"{at.get('x_zp', 0)},{at.get('b_zp', 0)},{at.get('out_zp', 0)},{at.get('qmin', -128)},"
                    f"{at.get('qmax', 127)},{at.get('include_pad', 1)}}},")
    out.append("static const tc_fop FOPS[] = {\n" + "\n".join(rows or ["  {0}"]) + "\n};\n")
    out.append(_arr("int32_t", "FNUMEL", [math.prod(s) for s in plan.front_shapes]))
    offs, size = front_offsets(plan)
    out.append(_arr("int32_t", "FOFF", offs))
    out.append(f"#define FRONT_BYTES {size}\n")
    return "".join(out)


def _back(plan: Plan) -> str:
    out, rows, prm, bns, pid, nbn = [], [], [], [], 0, 0
    for i, op in enumerate(plan.back):
        at, ids = op.attrs, {}
        for k, v in op.params.items():
            key = f"{op.name}.{k}"
            out.append(_arr("float", f"p{pid}_v", v, const=False))
            out.append(_arr("float", f"p{pid}_m", plan.momenta.get(key, torch.zeros_like(v)), const=False))
            w = f"p{pid}_v"
            if plan.precision == "fp16":   # the kernels' FP16 copy, filled by tinycl_init
                w = f"p{pid}_w"
                out.append(f"static tc_t {w}[{v.numel()}];\n")
            prm.append(f"{{p{pid}_v,p{pid}_m,{w},{v.numel()}}}")
            ids[k], pid = pid, pid + 1
        bn, train, eps, keep, mom = -1, 0, 0.0, 0.0, 0.0
        if op.kind == "batchnorm":
            out.append(_arr("float", f"bn{nbn}_rm", at["running_mean"], const=False))
            out.append(_arr("float", f"bn{nbn}_rv", at["running_var"], const=False))
            bns.append(f"{{bn{nbn}_rm,bn{nbn}_rv,{at['running_mean'].numel()}}}")
            bn, train, eps, mom = nbn, int(at["train"]), at["eps"], at["momentum"]
            keep, nbn = 1.0 - mom, nbn + 1
        s_in, s_out = plan.back_shapes[op.inputs[0]], plan.back_shapes[op.output]
        in1 = op.inputs[1] if len(op.inputs) > 1 else 0
        rows.append(f"  {{{BKIND[op.kind]},{op.inputs[0]},{in1},{op.output},{ids.get('weight', -1)},"
                    f"{ids.get('bias', -1)},{bn},{train},{_geom(s_in, s_out, at)},{f32(eps)},{f32(keep)},{f32(mom)}}},")
    out.append("static const tc_bop BOPS[] = {\n" + "\n".join(rows) + "\n};\n")
    out.append(_arr("int32_t", "BNUMEL", [math.prod(s) for s in plan.back_shapes]))
    out.append(f"static tc_param PARAMS[{max(pid, 1)}] = {{{','.join(prm) or '{0}'}}};\n")
    out.append(f"static tc_bnstate BNS[{max(nbn, 1)}] = {{{','.join(bns) or '{0}'}}};\n")
    return "".join(out), pid, nbn


def _memory(plan: Plan) -> str:
    size = 0 if plan.rows is None else int(plan.rows.shape[0])
    rows = plan.rows.reshape(-1) if size else []
    labels = plan.labels.reshape(-1) if size else []
    exps = plan.exps.reshape(-1) if size and plan.exps is not None else [0] * size
    return (_arr("float", "QSCALE", plan.q_scale) + _arr("float", "QZP", plan.q_zp)
            + _arr("uint8_t", "ROWS", rows, const=False, size=plan.capacity * plan.row_bytes)
            + _arr("int16_t", "LABELS", labels, const=False, size=plan.capacity)
            + _arr("int16_t", "EXPS", exps, const=False, size=plan.capacity)
            + f"static int32_t SIZE = {size}, SEEN = {plan.seen}, CUR_EXP = {plan.cur_exp}, "
            f"CUR_SEEN = {plan.cur_seen}, EXPERIENCE = {plan.experience};\n"
            + f"static tc_rng RNG = {{{plan.rng_state}ULL, {plan.rng_inc}ULL}};\n"
            + f"static float SCALE = {f32(plan.loss_scale.get('scale', 1.0))};\n"
            + f"static int32_t GOOD_STEPS = {plan.loss_scale.get('good_steps', 0)}, "
            f"SKIPPED = {plan.loss_scale.get('skipped', 0)};\n")


def model_c(plan: Plan) -> str:
    """The text of model.c."""
    back, npar, nbn = _back(plan)
    lat = plan.back_shapes[0]
    hw = math.prod(lat[1:]) if plan.granularity == "channel" else 1
    if plan.granularity == "channel" and len(plan.q_scale) != lat[0]:
        raise TinyclError(f"C export: {len(plan.q_scale)} latent scales for {lat[0]} channels")
    return f"""/* Generated by tinycl.export: the learner's tables and state. */
#include <string.h>
#include "tinycl.h"
#include "tc_engine.h"

{_front(plan)}{back}{_memory(plan)}
static const tc_model MODEL = {{
  .n_fops = {len(plan.front)}, .n_ft = {len(plan.front_shapes)}, .n_bops = {len(plan.back)},
  .n_bt = {len(plan.back_shapes)}, .n_params = {npar}, .n_bn = {nbn},
  .fops = FOPS, .fnumel = FNUMEL, .foff = FOFF, .front_bytes = FRONT_BYTES, .bnumel = BNUMEL,
  .bops = BOPS, .params = PARAMS, .bns = BNS,
  .in_scale = {float(plan.in_scale).hex()}, .lat_scale = {float(plan.lat_scale).hex()},
  .in_zp = {plan.in_zp}, .lat_zp = {plan.lat_zp}, .classes = {plan.classes}, .max_new = {plan.max_new},
  .replay_batch = {plan.replay_batch}, .lr = {f32(plan.lr)}, .momentum = {f32(plan.momentum)},
  .wd = {f32(plan.weight_decay)}, .bits = {plan.bits}, .per_channel = {int(plan.granularity == 'channel')},
  .lat_hw = {hw}, .qscale = QSCALE, .qzp = QZP, .capacity = {plan.capacity}, .row_bytes = {plan.row_bytes},
  .policy = {int(plan.policy == 'ar1')}, .quantize_new = {int(plan.quantize_new)},
  .rows = ROWS, .labels = LABELS, .exps = EXPS, .size = &SIZE, .seen = &SEEN, .cur_exp = &CUR_EXP,
  .cur_seen = &CUR_SEEN, .experience = &EXPERIENCE, .rng = &RNG,
  .scaler = {SCALER[plan.loss_scale.get('mode')]}, .scale = &SCALE, .good_steps = &GOOD_STEPS, .skipped = &SKIPPED,
  .growth = {plan.loss_scale.get('growth_interval', 0)}, .min_scale = {f32(plan.loss_scale.get('min_scale', 1.0))},
  .max_scale = {f32(plan.loss_scale.get('max_scale', 1.0))},
}};

{_api(plan, npar, nbn)}"""


def _api(plan: Plan, npar: int, nbn: int) -> str:
    """The API wrappers and the state dump of model.c."""
    nft, nbt = len(plan.front_shapes), len(plan.back_shapes)
    return f"""static tc_ctx CTX;
static int8_t *FT[{nft}];
static tc_t *ACT[{nbt}], *GRAD[{nbt}], *PGRAD[{max(npar, 1)}];
static float *BNSAVE[{max(nbn, 1)}];
static float LAST_LOSS;

size_t tinycl_arena_need(void) {{ return tc_arena_need(&MODEL); }}
int tinycl_init(void *arena, size_t size) {{ return tc_init(&MODEL, &CTX, FT, ACT, GRAD, PGRAD, BNSAVE, arena, size); }}
int tinycl_learn(const float *x, const int32_t *labels, int n)
{{ return tc_learn(&MODEL, &CTX, x, labels, n, &LAST_LOSS); }}
int tinycl_predict(const float *x, int32_t *cls) {{ return tc_predict(&MODEL, &CTX, x, cls); }}
int tinycl_logits(const float *x, float *logits) {{ return tc_logits(&MODEL, &CTX, x, logits); }}
int tinycl_set_experience(int32_t e) {{ return tc_set_experience(&MODEL, e); }}

void tinycl_dump(void (*put)(const void *, size_t), int n)
{{
  int i;
  put(&LAST_LOSS, 4);
  put(CTX.latcodes, (size_t)n * {plan.latent_numel});
  put(ROWS, sizeof ROWS);
  put(LABELS, sizeof LABELS);
  put(EXPS, sizeof EXPS);
  put(&SIZE, 4);
  put(&SEEN, 4);
  put(&CUR_EXP, 4);
  put(&CUR_SEEN, 4);
  put(&RNG.state, 8);
  for (i = 0; i < MODEL.n_params; i++) {{
    put(PARAMS[i].value, (size_t)PARAMS[i].numel * 4);
    put(PARAMS[i].mom, (size_t)PARAMS[i].numel * 4);
  }}
  for (i = 0; i < MODEL.n_bn; i++) {{
    put(BNS[i].rmean, (size_t)BNS[i].c * 4);
    put(BNS[i].rvar, (size_t)BNS[i].c * 4);
  }}
  put(&SCALE, 4);
  put(&GOOD_STEPS, 4);
  put(&SKIPPED, 4);
}}
"""


def tinycl_h(plan: Plan) -> str:
    return f"""/* Generated by tinycl.export: the learner's API. */
#ifndef TINYCL_H
#define TINYCL_H
#include <stddef.h>
#include <stdint.h>
#include "tinycl_rt.h"

#define TINYCL_ARENA_BYTES {arena_bytes(plan)}u   /* from export/planner.py */
#define TINYCL_INPUT_NUMEL {math.prod(plan.front_shapes[0])}
#define TINYCL_LATENT_NUMEL {plan.latent_numel}
#define TINYCL_CLASSES {plan.classes}
#define TINYCL_MAX_NEW {plan.max_new}
#define TINYCL_REPLAY_BATCH {plan.replay_batch}
#define TINYCL_CAPACITY {plan.capacity}
#define TINYCL_FP16 {int(plan.precision == "fp16")}   /* 1: the back's tensors are _Float16 */

size_t tinycl_arena_need(void);
int tinycl_init(void *arena, size_t size);
int tinycl_learn(const float *x, const int32_t *labels, int n);
int tinycl_predict(const float *x, int32_t *cls);
int tinycl_logits(const float *x, float *logits);
int tinycl_set_experience(int32_t e);   /* experience id of the next events (ar1 policy) */
void tinycl_dump(void (*put)(const void *, size_t), int n);
#endif
"""


def makefile(fp16: bool = False) -> str:
    return f"""# Generated by tinycl.export. make host | make m4 | make run-host | make run-m4 (in.bin -> out.bin)
CC ?= gcc
ARM_CC ?= arm-none-eabi-gcc
CFLAGS = {CFLAGS}
M4FLAGS = {M4FLAGS}{" " + M4_FP16 if fp16 else ""}
SRC = {SOURCES}

host: tinycl_host
m4: tinycl_m4.elf

tinycl_host: $(SRC) io_host.c *.h
\t$(CC) $(CFLAGS) -o $@ $(SRC) io_host.c -lm

tinycl_m4.elf: $(SRC) io_semi.c startup_m4.c an386.ld *.h
\t$(ARM_CC) $(CFLAGS) $(M4FLAGS) -ffunction-sections -fdata-sections -nostartfiles -T an386.ld \\
\t  -Wl,--gc-sections -o $@ $(SRC) io_semi.c startup_m4.c --specs=nosys.specs -lm
\tarm-none-eabi-size $@

run-host: tinycl_host
\t./tinycl_host in.bin out.bin

run-m4: tinycl_m4.elf
\t{QEMU}

.PHONY: host m4 run-host run-m4
"""


def generate(plan: Plan, out_dir: str | Path) -> Path:
    """Write the C project for ``plan`` into ``out_dir`` (created; written whole or not at all)."""
    check_plan(plan)
    files = {"model.c": model_c(plan), "tinycl.h": tinycl_h(plan), "tc_config.h": config_h(plan.precision == "fp16"),
             "Makefile": makefile(plan.precision == "fp16")}
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise TinyclError(f"C export: {out} exists and is not empty")
    tmp = Path(tempfile.mkdtemp(prefix=".tinycl-export-", dir=out.parent if out.parent.exists() else None))
    try:
        src = resources.files("tinycl.export") / "c"
        for name in RUNTIME:
            (tmp / name).write_bytes((src / name).read_bytes())
        for name, text in files.items():
            (tmp / name).write_text(text)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TinyclError(f"C export: cannot write {out}: {e}") from None
    return out


# ----------------------------------------------------------------------------- test program files

def write_input(path, events, tests, experiences=None) -> None:
    """Input file: int32 events; per event int32 experience, int32 n, n*input float32, n int32
    labels; int32 m; m inputs. ``experiences`` defaults to 0 for every event."""
    experiences = experiences or [0] * len(events)
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(events)))
        for (x, y), e in zip(events, experiences):
            f.write(struct.pack("<ii", e, x.shape[0]))
            f.write(x.to(torch.float32).contiguous().numpy().tobytes())
            f.write(y.to(torch.int32).contiguous().numpy().tobytes())
        f.write(struct.pack("<i", tests.shape[0]))
        f.write(tests.to(torch.float32).contiguous().numpy().tobytes())


class _Reader:
    def __init__(self, data: bytes):
        self.d, self.o = data, 0

    def take(self, n: int) -> bytes:
        if self.o + n > len(self.d):
            raise TinyclError("C export: the test program's output is truncated")
        b = self.d[self.o:self.o + n]
        self.o += n
        return b

    def i32(self) -> int:
        return struct.unpack("<i", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def tensor(self, dtype, n: int) -> torch.Tensor:
        size = torch.empty(0, dtype=dtype).element_size()
        return torch.frombuffer(bytearray(self.take(n * size)), dtype=dtype).clone()


def read_output(path, plan: Plan, events_n: list[int], tests: int) -> dict:
    """Parse the test program's output (see export/c/main.c)."""
    r = _Reader(Path(path).read_bytes())
    out = {"calib_ticks": r.u64(), "arena_need": r.i32(), "status_checks": [r.i32() for _ in range(8)], "events": []}
    keys = [(f"{op.name}.{k}", v.numel()) for op in plan.back for k, v in op.params.items()]
    nbn = [op.attrs["running_mean"].numel() for op in plan.back if op.kind == "batchnorm"]
    for n in events_n:
        ev = {"exp_status": r.i32(), "status": r.i32(), "ticks": r.u64(), "loss": r.tensor(torch.float32, 1)[0]}
        ev["latents"] = r.tensor(torch.int8, n * plan.latent_numel)
        ev["rows"] = r.tensor(torch.uint8, plan.capacity * plan.row_bytes).view(plan.capacity, plan.row_bytes)
        ev["labels"] = r.tensor(torch.int16, plan.capacity)
        ev["exps"] = r.tensor(torch.int16, plan.capacity)
        ev["size"], ev["seen"], ev["cur_exp"], ev["cur_seen"], ev["rng"] = r.i32(), r.i32(), r.i32(), r.i32(), r.u64()
        ev["params"], ev["momenta"] = {}, {}
        for k, n_el in keys:
            ev["params"][k] = r.tensor(torch.float32, n_el)
            ev["momenta"][k] = r.tensor(torch.float32, n_el)
        ev["bn"] = [(r.tensor(torch.float32, c), r.tensor(torch.float32, c)) for c in nbn]
        ev["scale"], ev["good_steps"], ev["skipped"] = r.tensor(torch.float32, 1)[0], r.i32(), r.i32()
        out["events"].append(ev)
    out["tests"] = []
    for _ in range(tests):
        st = r.i32()
        lg = r.tensor(torch.float32, plan.classes)
        out["tests"].append({"status": st, "logits": lg, "pred_status": r.i32(), "pred": r.i32()})
    return out
