"""The generated C learner with an FP16 back (``_Float16`` tensors, float arithmetic, float32 master
weights and momenta, the engine's loss scaling) against the Python reference, bit for bit: host gcc,
and a Cortex-M4F under QEMU where arm-none-eabi-gcc and qemu-system-arm exist. Plus the refusals
(bf16 and other policies) and the compile-time error where a compiler lacks ``_Float16``."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch
from torch import nn

from test_export_learner import (M4_MISSING, B, _learner, assert_same, data, needs_gcc, resnet8,  # noqa: F401
                                 run_c, run_reference, user_model)
from tinycl.errors import TinyclError
from tinycl.export import ref as R
from tinycl.export.generate import generate
from tinycl.export.plan import build_plan
from tinycl.export.planner import arena_blocks, element_bytes
from tinycl.export.reference import Reference
from tinycl.kernels import loss as LOSS
from tinycl.models.convert import from_torch
from tinycl.models.registry import split_points
from tinycl.numerics.precision import Precision

needs_m4 = pytest.mark.skipif(bool(M4_MISSING), reason=f"Cortex-M4 test needs {', '.join(M4_MISSING)} (not found)")


def is_fp16(t: torch.Tensor) -> bool:
    return torch.equal(t, t.half().float())


@pytest.fixture(scope="module")
def r8_fp16(data):  # noqa: F811
    plan, qf, events, tests = resnet8(data, "block3_1", precision="fp16")
    return plan, qf, events, tests, run_reference(plan, qf, events, tests)


@needs_gcc
def test_fp16_resnet8_block3_1_host_bit_exact(r8_fp16, tmp_path):
    plan, _, events, tests, (outs, logits) = r8_fp16
    assert plan.precision == "fp16" and plan.bits == 8 and plan.loss_scale["mode"] == "dynamic"
    c, proj = run_c(plan, events, tests, tmp_path / "proj")
    assert_same(c, outs, logits, plan)
    assert "#define TC_FP16 1" in (proj / "tc_config.h").read_text()
    assert "static tc_t p0_w[" in (proj / "model.c").read_text()
    # the logits are FP16 values, and not those of the same learner in FP32 (rounding happened)
    assert all(is_fp16(t["logits"]) for t in c["tests"])
    assert all(outs[-1]["params"][k].dtype == torch.float32 for k in outs[-1]["params"])  # float masters
    fp32 = plan.__class__(**{**plan.__dict__, "precision": "fp32", "loss_scale": {}})
    _, logits32 = run_reference(fp32, *r8_fp16[1:4])
    assert not torch.equal(logits32, logits)
    assert element_bytes(plan) == 2 and arena_blocks(plan)["activations"] < arena_blocks(fp32)["activations"]


@needs_gcc
def test_fp16_loss_scale_overflow_skip_and_growth_bit_exact(data, tmp_path):  # noqa: F811
    """Scale 2^17, growth after 2 clean steps: the events double the scale, overflow (step
    skipped, scale halved) and grow again, in C as in numerics/lossscale.py."""
    plan, qf, events, tests = resnet8(data, "block3_1", precision="fp16")
    plan.loss_scale.update(scale=2.0 ** 17, good_steps=1, growth_interval=2)
    outs, logits = run_reference(plan, qf, events, tests)
    scales = [o["scaler"] for o in outs]
    assert scales[-1][2] > plan.loss_scale["skipped"]            # a step was skipped
    assert any(s[0] > 2.0 ** 17 for s in scales)                   # the scale grew
    c, _ = run_c(plan, events, tests, tmp_path / "proj")
    assert_same(c, outs, logits, plan)


@pytest.fixture(scope="module")
def user_fp16(data):  # noqa: F811
    plan, qf, events, tests = user_model(data, policy="ar1", precision="fp16")
    exps = [0, 1, 1, 2]
    return plan, events, tests, exps, run_reference(plan, qf, events, tests, exps)


@needs_gcc
def test_fp16_user_model_ar1_host_bit_exact(user_fp16, tmp_path):
    """Depthwise and pointwise convs, BN in training mode, a residual (two gradients summed),
    overlapping max / avg pools, 4-bit per-channel replays, AR1*; a step overflows."""
    plan, events, tests, exps, (outs, logits) = user_fp16
    assert plan.precision == "fp16" and {"batchnorm", "add", "maxpool", "avgpool"} <= {op.kind for op in plan.back}
    assert outs[-1]["scaler"][2] > plan.loss_scale["skipped"]
    c, _ = run_c(plan, events, tests, tmp_path / "proj", experiences=exps)
    assert_same(c, outs, logits, plan)


def _m4_size(proj) -> dict:
    out = subprocess.run(["arm-none-eabi-size", "tinycl_m4.elf"], cwd=proj, capture_output=True, text=True,
                         check=True).stdout.splitlines()[1].split()
    return dict(zip(("text", "data", "bss"), map(int, out[:3])))


@needs_m4
def test_fp16_resnet8_block3_1_cortex_m4_qemu_bit_exact(r8_fp16, tmp_path):
    plan, _, events, tests, (outs, logits) = r8_fp16
    c, proj = run_c(plan, events, tests, tmp_path / "proj", target="m4")
    assert_same(c, outs, logits, plan)
    assert "-mfp16-format=ieee" in (proj / "Makefile").read_text()
    assert c["calib_ticks"] > 0 and all(e["ticks"] > 0 for e in c["events"])
    assert _m4_size(proj)["bss"] >= arena_blocks(plan)["activations"]


@needs_m4
def test_fp16_user_model_cortex_m4_qemu_bit_exact(user_fp16, tmp_path):
    plan, events, tests, exps, (outs, logits) = user_fp16
    c, _ = run_c(plan, events, tests, tmp_path / "proj", target="m4", experiences=exps)
    assert_same(c, outs, logits, plan)


# ----------------------------------------------------------------------------- no _Float16, refusals

@needs_gcc
def test_a_compiler_without_float16_stops_with_an_error_naming_it(r8_fp16, tmp_path):
    proj = generate(r8_fp16[0], tmp_path / "proj")
    # gcc without its _Float16 macro stands for a compiler that lacks the type
    r = subprocess.run(["make", "-s", "host", "CC=gcc -U__FLT16_MAX__"], cwd=proj, capture_output=True, text=True)
    assert r.returncode != 0 and "#error" in r.stderr and "needs _Float16" in r.stderr
    if shutil.which("arm-none-eabi-gcc"):   # the real case: arm-none-eabi-gcc without -mfp16-format=ieee
        r = subprocess.run(["make", "-s", "m4", "M4FLAGS=-mcpu=cortex-m4 -mfpu=fpv4-sp-d16 -mfloat-abi=hard -mthumb"],
                           cwd=proj, capture_output=True, text=True)
        assert r.returncode != 0 and "needs _Float16" in r.stderr


@pytest.mark.parametrize("policy,what", [
    (Precision("bf16", "bf16", "bf16", "bf16"), "formats bf16"),
    (Precision("fp16n", "fp16", "fp16", "fp16", accumulate="native"), "accumulate='native'"),
    (Precision("fp16m", "fp16", "fp16", "fp16", master_weights=False), "no master weights"),
    (Precision("fp16s", "fp16", "fp16", "fp16", stochastic=True), "stochastic rounding"),
    (Precision("mixed", "fp16", "fp32", "fp16"), "formats fp16/fp32/fp16"),
])
def test_unsupported_precisions_are_refused_in_one_line(r8_fp16, policy, what, tmp_path):
    qf = r8_fp16[1]
    net = from_torch(nn.Sequential(nn.Linear(8, 10)), (8,), precision=policy)
    with pytest.raises(TinyclError, match=what) as e:
        build_plan(qf, (3, 32, 32), net, 10)
    assert "\n" not in str(e.value) and policy.name in str(e.value)


def test_generate_refuses_an_unknown_plan_precision_and_writes_nothing(r8_fp16, tmp_path):
    plan = r8_fp16[0]
    bad = plan.__class__(**{**plan.__dict__, "precision": "bf16"})
    with pytest.raises(TinyclError, match="precision 'bf16'"):
        generate(bad, tmp_path / "proj")
    assert not (tmp_path / "proj").exists() and not list(tmp_path.glob(".tinycl-export-*"))


# ----------------------------------------------------------------------------- the reference vs the engine

def test_reference_rounds_where_the_engine_fp16_policy_rounds(data):  # noqa: F811
    """The FP16 reference (so the C) against the engine's own fp16 policy on one batch: logits and
    loss-scaled, then unscaled parameter gradients of ResNet-8's back at block3_1 agree exactly on
    nearly every element (what remains is the engine's BLAS summation order, one FP16 ulp). The
    same reference without the FP16 rounding points does not: the check can fail."""
    bb, ds = data
    model = B.build_model(bb)
    cut = split_points(model).index("block3_1") + 1
    plan, qf, events, _ = _learner(model[:cut].eval(), model[cut:].eval(), bb, ds, 8, "tensor",
                                   precision="fp16")
    ref = Reference(plan, qf)
    x = torch.cat([ref.latents(e[0])[1] for e in events])[:8]
    y = torch.cat([e[1] for e in events])[:8]
    net = from_torch(model[cut:].eval(), tuple(x.shape[1:]), precision="fp16").train()
    sd = net.state_dict()
    sd.update({f"{op.name}.{k}": v.reshape(sd[f"{op.name}.{k}"].shape)
               for op in plan.back for k, v in op.params.items()})
    net.load_state_dict(sd)
    out = net.forward(x)
    _, probs = LOSS.cross_entropy_forward(out, y)
    net.backward(LOSS.cross_entropy_backward(probs, y) * net.scaler.scale, need_input=False)
    grads = net.named_grads()

    def agree(a, b):
        return float((a.reshape(-1) == b.reshape(-1)).float().mean())

    acts = ref.forward(x, train=True)
    _, d = R.softmax_ce(acts[-1], y)
    pg = ref.backward(acts, ref.rt(d * R.c32(ref.scale)))
    assert agree(acts[-1], out) >= 0.95
    assert all(agree(pg[k] / ref.scale, grads[k]) >= 0.95 for k in pg) and set(pg) == set(grads)
    plain = Reference(plan.__class__(**{**plan.__dict__, "precision": "fp32"}), qf)
    assert agree(plain.forward(x, train=True)[-1], out) < 0.5
