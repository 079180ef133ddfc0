"""Generated C learner vs the Python reference, byte for byte and bit for bit, after several
learning events on the shipped CIFAR subset: host gcc (default suite) and a Cortex-M4F under
QEMU (where arm-none-eabi-gcc and qemu-system-arm exist)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch
from torch import nn

from tinycl.cl import backbone as B
from tinycl.cl.memory import ReplayMemory
from tinycl.data.shipped import load_shipped
from tinycl.errors import TinyclError
from tinycl.export.generate import generate, read_output, write_input
from tinycl.export.plan import build_plan
from tinycl.export.planner import arena_bytes
from tinycl.export.reference import Reference
from tinycl.kernels.optim import SGD
from tinycl.models.blocks import Residual
from tinycl.models.convert import from_torch
from tinycl.models.int8_front import quantize_front
from tinycl.models.registry import split_points
from tinycl.numerics.latent_quant import LatentQuantizer
from tinycl.numerics.rng import Pcg32

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("make") is None,
                               reason="host gcc or make not found")
# status codes of the test program's bad-argument checks (export/c/main.c):
# learn before init, arena too small, init, null pointer, label out of range, n = 0, predict(NULL),
# experience -1
STATUS_CHECKS = [-5, -3, 0, -1, -2, -4, -1, -6]


@pytest.fixture(scope="module")
def data():
    bb = B.load_backbone(B.SHIPPED)
    return bb, load_shipped()


def _inputs(bb, ds, idx):
    return B.to_input(ds.train.x[idx], bb["mean"], bb["std"])


def _learner(front, back, bb, ds, bits, granularity, capacity=24, fill=20, max_new=4, replay_batch=4, seed=0,
             policy="reservoir", quantize_new=False, precision="fp32"):
    """Plan + front + events + test inputs: INT8 front calibrated on real images, a replay
    memory holding ``fill`` latents, a back (of the engine's ``precision`` policy) that already
    took one SGD step (non-zero momenta)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(ds.train.x), generator=g)
    qf = quantize_front(front, _inputs(bb, ds, perm[:64]))
    lat = qf(_inputs(bb, ds, perm[64:64 + fill + 8]))
    mem = ReplayMemory(capacity, LatentQuantizer(bits, granularity).fit(lat), policy, seed=seed)
    mem.add(lat[:fill], ds.train.y[perm[64:64 + fill]], 0)
    net = from_torch(back, tuple(lat.shape[1:]), precision=precision).train()
    opt = SGD(lr=0.01, momentum=0.9, weight_decay=5e-4)
    net.train_step(lat[fill:fill + 8], ds.train.y[perm[64 + fill:64 + fill + 8]], opt)
    plan = build_plan(qf, tuple(ds.train.x.shape[1:]), net, len(ds.classes), mem, opt, Pcg32(seed, 7),
                      max_new=max_new, replay_batch=replay_batch, quantize_new=quantize_new)
    events, at = [], 200
    for n in (max_new, 1, max_new - 1, max_new):  # the memory fills up during the second event
        idx = perm[at:at + n]
        events.append((_inputs(bb, ds, idx), ds.train.y[idx]))
        at += n
    return plan, qf, events, B.to_input(ds.test.x[:3], bb["mean"], bb["std"])


def resnet8(data, latent_layer, bits=8, granularity="tensor", **kw):
    bb, ds = data
    model = B.build_model(bb)
    cut = split_points(model).index(latent_layer) + 1
    return _learner(model[:cut].eval(), model[cut:].eval(), bb, ds, bits, granularity, **kw)


def user_model(data, **kw):
    """A user-style model: a standalone ReLU6, max/avg pools in the INT8 front; depthwise, pointwise,
    a residual, pools and ReLU6 in the trained back; 4-bit per-channel replays."""
    bb, ds = data
    torch.manual_seed(3)

    def cbr(cin, cout, k, s, p, groups=1, act=nn.ReLU6):
        bn = nn.BatchNorm2d(cout)
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
        return [nn.Conv2d(cin, cout, k, s, p, groups=groups, bias=False), bn, act()]

    front = nn.Sequential(*cbr(3, 8, 3, 1, 1, act=nn.Identity), nn.MaxPool2d(2), nn.ReLU6(),
                          *cbr(8, 16, 3, 2, 1, act=nn.ReLU),
                          nn.AvgPool2d(2)).eval()
    back = nn.Sequential(*cbr(16, 16, 3, 1, 1, groups=16), *cbr(16, 24, 1, 1, 0, act=nn.ReLU),
                         Residual(nn.Sequential(*cbr(24, 24, 3, 1, 1, groups=24)), None, nn.ReLU()),
                         nn.MaxPool2d(2, 1), nn.AvgPool2d(3, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(24, 10)).eval()
    return _learner(front, back, bb, ds, 4, "channel", **kw)


def vector_model(data):
    """Front ending in global pool, flatten and an INT8 Linear; a back of Linear layers; 6-bit replays."""
    bb, ds = data
    torch.manual_seed(4)
    front = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 16), nn.ReLU()).eval()
    back = nn.Sequential(nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 10)).eval()
    return _learner(front, back, bb, ds, 6, "tensor")


def run_reference(plan, qf, events, tests, experiences=None):
    ref = Reference(plan, qf)
    outs = []
    for i, (x, y) in enumerate(events):
        ref.set_experience(experiences[i] if experiences else 0)
        r = ref.learn(x, y)
        outs.append({"latents": r["latents"].reshape(-1), "loss": r["loss"].reshape(1), "rows": ref.rows.clone(),
                     "labels": ref.labels.clone(), "exps": ref.exps.clone(), "size": ref.size, "seen": ref.seen,
                     "cur": (ref.cur_exp, ref.cur_seen), "rng": ref.rng.state,
                     "params": {k: v.clone() for k, v in ref.params.items()},
                     "momenta": {k: v.clone() for k, v in ref.momenta.items()},
                     "bn": [(rm.clone(), rv.clone()) for _, (rm, rv) in sorted(ref.bn.items())],
                     "scaler": (ref.scale, ref.good_steps, ref.skipped)})
    return outs, ref.logits(tests)


def run_c(plan, events, tests, out_dir, target="host", experiences=None):
    proj = generate(plan, out_dir)
    write_input(proj / "in.bin", events, tests, experiences)
    for step in ((target,), ("run-" + target,)):
        subprocess.run(["make", "-s", *step], cwd=proj, check=True, capture_output=True, timeout=300)
    return read_output(proj / "out.bin", plan, [x.shape[0] for x, _ in events], tests.shape[0]), proj


def bits(a: torch.Tensor) -> torch.Tensor:
    a = a.contiguous().reshape(-1)
    return a.view(torch.int32) if a.dtype == torch.float32 else a


def assert_same(c, ref_outs, ref_logits, plan):
    assert c["arena_need"] == arena_bytes(plan)
    assert c["status_checks"] == STATUS_CHECKS
    for i, (e, r) in enumerate(zip(c["events"], ref_outs)):
        where = f"event {i}"
        assert e["status"] == 0 and e["exp_status"] == 0, where
        assert torch.equal(e["latents"], r["latents"].to(torch.int8)), f"{where}: INT8 latents"
        assert torch.equal(e["rows"], r["rows"]), f"{where}: packed replay memory"
        assert torch.equal(e["labels"], r["labels"]), f"{where}: replay labels"
        assert torch.equal(e["exps"], r["exps"]), f"{where}: replay experience ids"
        assert (e["size"], e["seen"], (e["cur_exp"], e["cur_seen"]), e["rng"]) == (
            r["size"], r["seen"], r["cur"], r["rng"]), f"{where}: counters, rng"
        assert torch.equal(bits(e["loss"].reshape(1)), bits(r["loss"])), f"{where}: loss"
        for k in r["params"]:
            assert torch.equal(bits(e["params"][k]), bits(r["params"][k])), f"{where}: weight {k}"
            assert torch.equal(bits(e["momenta"][k]), bits(r["momenta"][k])), f"{where}: momentum {k}"
        for (a, b), (ra, rb) in zip(e["bn"], r["bn"]):
            assert torch.equal(bits(a), bits(ra)) and torch.equal(bits(b), bits(rb)), f"{where}: BN statistics"
        assert (float(e["scale"]), e["good_steps"], e["skipped"]) == r["scaler"], f"{where}: loss scaler"
    for t, lg in zip(c["tests"], ref_logits):
        assert t["status"] == 0 and t["pred_status"] == 0
        assert torch.equal(bits(t["logits"]), bits(lg)), "logits"
        assert t["pred"] == int(lg.argmax())


@pytest.fixture(scope="module")
def resnet8_block3(data):
    plan, qf, events, tests = resnet8(data, "block3_1")
    return plan, qf, events, tests, run_reference(plan, qf, events, tests)


@needs_gcc
def test_resnet8_block3_1_host_bit_exact(resnet8_block3, tmp_path):
    plan, _, events, tests, (outs, logits) = resnet8_block3
    assert plan.bits == 8 and [op.kind for op in plan.back] == ["gap", "flatten", "linear"]
    c, _ = run_c(plan, events, tests, tmp_path / "proj")
    assert_same(c, outs, logits, plan)
    assert outs[-1]["size"] == plan.capacity and outs[-1]["seen"] > plan.capacity  # replacements happened


@needs_gcc
def test_resnet8_ar1_and_quantized_new_latents_host_bit_exact(data, tmp_path):
    """AR1* replacement over experiences 1, 1, 2, 2 after experience 0 (quotas 12 then 8 of
    24 slots), training on new latents through the quantizer (lr_quantize_new)."""
    plan, qf, events, tests = resnet8(data, "block3_1", policy="ar1", quantize_new=True)
    assert plan.policy == "ar1" and plan.cur_exp == 0 and plan.quantize_new
    exps = [1, 1, 2, 2]
    outs, logits = run_reference(plan, qf, events, tests, exps)
    assert sorted(set(outs[-1]["exps"].tolist())) == [0, 1, 2]
    c, _ = run_c(plan, events, tests, tmp_path / "proj", experiences=exps)
    assert_same(c, outs, logits, plan)
    bad = Reference(plan, qf)
    bad.set_experience(2)
    bad.learn(*events[1])
    with pytest.raises(TinyclError, match="experience"):  # ar1 ids must not decrease
        bad.set_experience(1)


@needs_gcc
@pytest.mark.parametrize("which", ["resnet8_block2_1", "user", "vector"])
def test_other_learners_host_bit_exact(data, which, tmp_path):
    if which == "user":
        plan, qf, events, tests = user_model(data)
        kinds = {op.kind for op in plan.front} | {op.kind for op in plan.back}
        assert {"maxpool_int8", "avgpool_int8", "clamp_int8", "relu6", "maxpool", "avgpool", "add"} <= kinds
        assert any(op.kind == "conv2d" and op.attrs["groups"] > 1 for op in plan.back)
    elif which == "vector":
        plan, qf, events, tests = vector_model(data)
        assert {"gap_int8", "flatten", "linear_int8"} <= {op.kind for op in plan.front}
    else:
        plan, qf, events, tests = resnet8(data, "block2_1")
        assert {"conv2d", "batchnorm", "add", "relu"} <= {op.kind for op in plan.back}
    outs, logits = run_reference(plan, qf, events, tests)
    c, _ = run_c(plan, events, tests, tmp_path / "proj")
    assert_same(c, outs, logits, plan)


def test_reference_front_is_the_emulation(resnet8_block3):
    plan, qf, events, _, (outs, _) = resnet8_block3
    q, _, _ = qf.forward_int(events[0][0])
    assert torch.equal(outs[0]["latents"], q.reshape(-1))


M4_MISSING = [t for t in ("arm-none-eabi-gcc", "qemu-system-arm", "make") if shutil.which(t) is None]


@pytest.mark.skipif(bool(M4_MISSING), reason=f"Cortex-M4 test needs {', '.join(M4_MISSING)} (not found)")
def test_resnet8_block3_1_cortex_m4_qemu_bit_exact(resnet8_block3, tmp_path):
    plan, _, events, tests, (outs, logits) = resnet8_block3
    c, proj = run_c(plan, events, tests, tmp_path / "proj", target="m4")
    assert_same(c, outs, logits, plan)
    assert c["calib_ticks"] > 0 and all(e["ticks"] > 0 for e in c["events"])
    size = subprocess.run(["arm-none-eabi-size", "tinycl_m4.elf"], cwd=proj, capture_output=True, text=True,
                          check=True).stdout
    assert "tinycl_m4.elf" in size


@pytest.mark.skipif(bool(M4_MISSING), reason=f"Cortex-M4 test needs {', '.join(M4_MISSING)} (not found)")
def test_user_model_ar1_cortex_m4_qemu_bit_exact(data, tmp_path):
    """Depthwise/pointwise convs, BN in training mode, a residual, pools, 4-bit per-channel
    replays and AR1* over experiences, on the Cortex-M4F."""
    plan, qf, events, tests = user_model(data, policy="ar1")
    exps = [0, 1, 1, 2]
    outs, logits = run_reference(plan, qf, events, tests, exps)
    c, _ = run_c(plan, events, tests, tmp_path / "proj", target="m4", experiences=exps)
    assert_same(c, outs, logits, plan)


# ----------------------------------------------------------------------------- refusals

def test_refuses_unsupported_with_one_line(data, resnet8_block3, tmp_path):
    bb, ds = data
    plan, qf, *_ = resnet8_block3
    lat = torch.rand(4, 8)
    for back, what in ((nn.Sequential(nn.Linear(8, 10), nn.LeakyReLU()), "leaky_relu"),
                       (nn.Sequential(nn.Dropout(0.5), nn.Linear(8, 10)), "dropout")):
        net = from_torch(back.train(), (8,))
        with pytest.raises(TinyclError, match=what) as e:
            build_plan(qf, (3, 32, 32), net, 10)
        assert "\n" not in str(e.value)
    mem = ReplayMemory(4, LatentQuantizer(8).fit(lat), "class_balanced")
    net = from_torch(nn.Sequential(nn.Linear(8, 10)), (8,))
    with pytest.raises(TinyclError, match="policy 'class_balanced'"):
        build_plan(qf, (3, 32, 32), net, 10, mem)
    mem = ReplayMemory(4, LatentQuantizer("fp16").fit(lat), "reservoir")
    with pytest.raises(TinyclError, match="latent format 'fp16'"):
        build_plan(qf, (3, 32, 32), net, 10, mem)
    target = tmp_path / "out"
    with pytest.raises(TinyclError, match="differs from back input"):
        generate(build_plan(qf, (3, 32, 32), net, 10, ReplayMemory(4, LatentQuantizer(8).fit(lat), "reservoir")),
                 target)
    assert not target.exists()
    (target / "x").mkdir(parents=True)
    with pytest.raises(TinyclError, match="not empty"):
        generate(plan, target)


def test_non_finite_state_writes_nothing(resnet8_block3, tmp_path):
    plan, *_ = resnet8_block3
    w = plan.back[-1].params["weight"]
    old = w[0, 0].item()
    w[0, 0] = float("nan")
    try:
        with pytest.raises(TinyclError, match="non-finite"):
            generate(plan, tmp_path / "proj")
    finally:
        w[0, 0] = old
    assert not (tmp_path / "proj").exists() and not list(tmp_path.glob(".tinycl-export-*"))


def test_reference_rejects_bad_events(resnet8_block3):
    plan, qf, events, *_ = resnet8_block3
    ref = Reference(plan, qf)
    x, y = events[0]
    with pytest.raises(TinyclError, match="labels"):
        ref.learn(x, torch.full_like(y, plan.classes))
    with pytest.raises(TinyclError, match="new samples"):
        ref.learn(torch.cat([x, x]), torch.cat([y, y]))


def test_front_offsets_never_overlap_live_tensors(resnet8_block3, data):
    from tinycl.export.planner import front_offsets
    for plan in (resnet8_block3[0], user_model(data)[0]):
        offs, size = front_offsets(plan)
        n = len(plan.front_shapes)
        nbytes = [(int(torch.tensor(s).prod()) + 7) // 8 * 8 for s in plan.front_shapes]
        born, last = [-1] + [0] * (n - 1), [0] * n
        for i, op in enumerate(plan.front):
            born[op.output] = i
            for t in op.inputs:
                last[t] = i
        last[-1] = len(plan.front)
        for a in range(n):
            assert offs[a] + nbytes[a] <= size
            for b in range(a + 1, n):
                if born[b] <= last[a] and born[a] <= last[b]:   # alive at the same op
                    assert offs[a] + nbytes[a] <= offs[b] or offs[b] + nbytes[b] <= offs[a], (a, b)
        assert size < sum(nbytes)   # sharing happened


@needs_gcc
def test_empty_memory_and_a_batch_of_one_with_batch_norm(data, tmp_path):
    """An empty memory and one new sample: BN batch statistics are impossible, so the C returns
    TINYCL_EBATCH and changes nothing (the reference refuses too); the next event fills slots."""
    plan, qf, events, tests = user_model(data, fill=0)
    assert plan.capacity == 24 and (plan.rows is None or plan.rows.shape[0] == 0)
    ref = Reference(plan, qf)
    with pytest.raises(TinyclError, match="at least 2"):
        ref.learn(*events[1])
    evs = [events[1], events[0]]
    outs, logits = run_reference(plan, qf, evs[1:], tests)
    c, _ = run_c(plan, evs, tests, tmp_path / "proj")
    assert c["events"][0]["status"] == -4 and c["events"][0]["size"] == 0 and c["events"][0]["seen"] == 0
    c["events"] = c["events"][1:]
    assert_same(c, outs, logits, plan)
    assert outs[0]["size"] == 4


def test_validation_rows_format():
    from tinycl.hw.measured import validation_rows
    from tinycl.hw.validate import format_table
    res = [{"latent_layer": "block3_1", "events": [{"new": 4, "replays": 4, "instructions": 1000,
                                                    "stm32l4_model_cycles": 250}]}]
    rows = validation_rows(res, overrides={"cpi": 1.0})
    assert rows[0]["published"] == 1000 and rows[0]["modelled"] == 250 and rows[0]["error"] == -0.75
    assert "block3_1" in format_table(rows) and "-75%" in format_table(rows)
    rows = validation_rows(res, overrides={"cpi": 2.0})   # 1000 instructions x 2 cycles each
    assert rows[0]["published"] == 2000 and rows[0]["error"] == -0.875
