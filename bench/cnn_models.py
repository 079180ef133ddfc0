"""Real CNN library models through capture: coverage and worst relative error against float64 autograd.

For each torchvision / timm / MCUNet model: ``tinycl.from_torch`` capture, then one training step in
float64 at batch 2 (output, input gradient and every parameter gradient) against torch autograd. The
worst relative error is the one of bench/attention_models.py (``tests/test_attention.worst_error``:
max |ours - torch| / max |torch| per tensor, with the scale of a gradient that is zero in exact
arithmetic floored at 1e-7 of the largest gradient). Refusals print their one-line TinyclError; any
other exception is a finding and is printed as such. Prints a markdown table (docs/engine.md).

    OMP_NUM_THREADS=1 .venv/bin/python bench/cnn_models.py --json bench/results/cnn_models.json
    .venv/bin/python bench/cnn_models.py resnet18 tv:resnet50   # a subset (NAME: either library, tv:NAME: torchvision)
"""

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch
from torch import nn

from tinycl import from_torch
from tinycl.errors import TinyclError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from realmodels import torchvision_models
from test_attention import _no_dropout, worst_error

D = torch.float64
S64, S32 = (3, 64, 64), (3, 32, 32)
# (builder name, keyword arguments, input shape (C, H, W)); 64x64 inputs where the model allows
TORCHVISION = [("mobilenet_v2", {}, S64), ("mobilenet_v3_small", {}, S64), ("mobilenet_v3_large", {}, S64),
               ("resnet18", {}, S64), ("resnet50", {}, S64), ("shufflenet_v2_x0_5", {}, S64),
               ("shufflenet_v2_x1_0", {}, S64), ("squeezenet1_0", {}, S64), ("squeezenet1_1", {}, S64),
               ("efficientnet_b0", {}, S64), ("mnasnet0_5", {}, S64), ("regnet_x_400mf", {}, S64),
               ("regnet_y_400mf", {}, S64),
               ("googlenet", {"aux_logits": False, "init_weights": False}, S64),
               ("densenet121", {}, S64)]
TIMM = [("lcnet_050", {}, S64), ("mobilenetv3_small_050", {}, S64), ("efficientnet_b0", {}, S64),
        ("ghostnet_100", {}, S64), ("mixnet_s", {}, S64), ("rexnet_100", {}, S64), ("tinynet_a", {}, S64),
        ("convnext_atto", {}, S64), ("resnet18", {}, S64), ("hardcorenas_a", {}, S64), ("fbnetc_100", {}, S64),
        ("semnasnet_050", {}, S64), ("mobilenetv2_050", {}, S64), ("regnetx_002", {}, S64)]


def mcunet_style():
    """The ProxylessNAS network of tests/test_graph_capture.py::test_mcunet_style_network (built
    inside that test, so repeated here): MCUNet's own modules, inverted residual blocks, k 3/5/7."""
    from mcunet.tinynas.nn.modules import ConvLayer, IdentityLayer, LinearLayer, MBInvertedConvLayer
    from mcunet.tinynas.nn.networks.proxyless_nets import MobileInvertedResidualBlock, ProxylessNASNets
    blocks = []
    for cin, cout, k, s, e in [(16, 8, 3, 1, 1), (8, 16, 5, 2, 3), (16, 16, 3, 1, 4), (16, 24, 7, 2, 6)]:
        short = IdentityLayer(cin, cin) if s == 1 and cin == cout else None
        blocks.append(MobileInvertedResidualBlock(MBInvertedConvLayer(cin, cout, k, s, expand_ratio=e), short))
    return ProxylessNASNets(ConvLayer(3, 16, 3, stride=2, act_func="relu6"), blocks,
                            ConvLayer(24, 32, 1, act_func="relu6"), LinearLayer(32, 10))


def cases(only):
    """(label, factory or None, input shape, skip reason or None) for every model."""
    tvm = torchvision_models()
    import timm
    out = []
    for name, kw, shape in TORCHVISION:
        label = f"torchvision {name}"
        make = getattr(tvm, name, None)
        out.append((label, make and (lambda make=make, kw=kw: make(num_classes=10, **kw)), shape,
                    None if make else f"torchvision {tvm.__name__} lacks {name}"))
    for name, kw, shape in TIMM:
        label = f"timm {name}"
        ok = timm.is_model(name)
        out.append((label, lambda name=name, kw=kw: timm.create_model(name, num_classes=10, **kw), shape,
                    None if ok else f"timm {timm.__version__} lacks {name}"))
    out.append(("mcunet proxylessnas", mcunet_style, S32, None))
    if only:
        out = [c for c in out if any(o == c[0].split()[-1] or o == "tv:" + c[0].split()[-1] and
                                     c[0].startswith("torchvision") for o in only)]
    return out


def prepare(model):
    """As tests/test_network.check_against_autograd: float64, training mode, non-trivial BN
    statistics and affine parameters, no dropout or stochastic depth (random masks differ from
    torch's), including timm's functional ``F.dropout(x, self.drop_rate)``."""
    torch.manual_seed(0)
    model = _no_dropout(model).to(D).train()
    for m in model.modules():  # functional dropout / drop path read these (timm GhostNet's head: 0.2)
        for attr in ("drop_rate", "drop_prob"):
            if isinstance(getattr(m, attr, None), float):
                setattr(m, attr, 0.0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(); m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_(1, 0.2); m.bias.data.normal_(0, 0.2)
    return model


def run_one(label, make, shape, batch=2):
    row = {"model": label, "input": list(shape)}
    t0 = time.perf_counter()
    torch.manual_seed(0)
    try:
        model = prepare(make())
    except Exception as e:  # the library's builder, not tinycl
        row.update(status="build failed", error=f"{type(e).__name__}: {e}".splitlines()[0], seconds=0.0)
        return row
    row["parameters"] = sum(p.numel() for p in model.parameters())
    try:
        net = from_torch(model, shape)
    except TinyclError as e:
        row.update(status="refused", error=str(e).splitlines()[0] if str(e) else type(e).__name__)
        row["seconds"] = round(time.perf_counter() - t0, 2)
        return row
    except Exception as e:  # not a TinyclError: a finding
        row.update(status="crash", error=f"{type(e).__name__}: {e}".splitlines()[0],
                   traceback=traceback.format_exc(limit=-4))
        row["seconds"] = round(time.perf_counter() - t0, 2)
        return row
    row["nodes"] = len(net.graph.nodes)
    net.train()
    try:
        torch.manual_seed(1)
        row["worst_error"] = worst_error(net, model, torch.randn(batch, *shape, dtype=D))
        row["status"] = "ok" if row["worst_error"] <= 1e-6 else "mismatch"
    except TinyclError as e:
        row.update(status="refused in training step", error=str(e).splitlines()[0])
    except Exception as e:
        row.update(status="crash in training step", error=f"{type(e).__name__}: {e}".splitlines()[0],
                   traceback=traceback.format_exc(limit=-4))
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def table(rows):
    lines = ["| model | input | parameters | graph nodes | worst relative error | seconds |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] == "skipped":
            continue
        err = f"{r['worst_error']:.1e}" if "worst_error" in r else r["status"]
        if r["status"] == "mismatch":
            err += " (over 1e-6)"
        lines.append(f"| {r['model']} | {'x'.join(map(str, r['input']))} | {r['parameters']:,} | "
                     f"{r.get('nodes', '-')} | {err} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="a subset: timm or torchvision names (tv:NAME for torchvision)")
    ap.add_argument("--json", help="write the rows to this file")
    ap.add_argument("--batch", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for label, make, shape, skip in cases(args.models):
        if skip:
            print(f"{label}: skipped: {skip}", flush=True)
            rows.append({"model": label, "input": list(shape), "status": "skipped", "reason": skip})
            continue
        r = run_one(label, make, shape, args.batch)
        rows.append(r)
        msg = f"{r['worst_error']:.1e}" if "worst_error" in r else f"{r['status']}: {r.get('error')}"
        print(f"{label:50s} {msg} ({r['seconds']:.1f} s)", flush=True)
        if "traceback" in r:
            print(r["traceback"], flush=True)
    print()
    print(table(rows))
    bad = [r for r in rows if r["status"] not in ("ok", "skipped")]
    if bad:
        print()
        for r in bad:
            print(f"- {r['model']}: {r['status']}: {r.get('error', '')}")
    if args.json:
        import timm
        import torchvision
        meta = {"torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__,
                "threads": 1, "batch": args.batch, "dtype": "float64",
                "seconds": "wall time per model: build, capture, one tinycl step and one autograd step"}
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
