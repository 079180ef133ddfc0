"""Attention models through capture: worst relative error of tinycl against float64 autograd.

For each model (user-written blocks from tests/test_attention.py, timm vision transformers and
MobileViTs), one training step in float64: the output, the input gradient and every parameter
gradient of tinycl's captured graph against torch autograd, at batch 2 and 3 (the batch stays
symbolic where reshapes fold it). Prints the worst relative error per model (docs/engine.md).

    .venv/bin/python bench/attention_models.py              # all models (minutes, 1 thread)
    .venv/bin/python bench/attention_models.py levit_128s    # also another timm model at 224x224
"""

import sys
from pathlib import Path

import torch

from tinycl import from_torch
from tinycl.errors import TinyclError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_attention import (
    BiasTable,
    D,
    Heads,
    Patches,
    TorchMHA,
    _no_dropout,
    _timm,
    worst_error,
)
from test_network import check_against_autograd

TIMM = [("mobilevit_xxs", {}, (3, 64, 64)), ("mobilevit_xs", {}, (3, 64, 64)), ("mobilevitv2_050", {}, (3, 96, 96)),
        ("vit_tiny_patch16_224", {"img_size": 32}, (3, 32, 32)),
        ("deit_tiny_patch16_224", {"img_size": 32}, (3, 32, 32)), ("pit_ti_224", {}, (3, 224, 224)),
        ("levit_128s", {}, (3, 224, 224)), ("efficientformer_l1", {}, (3, 224, 224)),
        ("tiny_vit_5m_224", {}, (3, 224, 224))]
# refused in one line naming the op (printed as such)
REFUSED = [("efficientvit_m0", {}, (3, 224, 224)), ("crossvit_tiny_240", {}, (3, 240, 240)),
           ("convit_tiny", {"img_size": 32}, (3, 32, 32))]


def main(extra: list[str]) -> None:
    torch.set_num_threads(1)
    cases = [("Heads (user block)", Heads, (5, 16)), ("Patches", Patches, (4, 6, 4)),
             ("TorchMHA", lambda: TorchMHA(False), (5, 8)), ("BiasTable", BiasTable, (4, 6))]
    tm = _timm()
    for name, kw, shape in TIMM + [(a, {}, (3, 224, 224)) for a in extra]:
        cases.append((name, lambda name=name, kw=kw: _no_dropout(tm.create_model(name, num_classes=10, **kw)), shape))
    for name, make, shape in cases:
        torch.manual_seed(0)
        model = make()
        net = check_against_autograd(model, shape, batch=2, tol=1e-6)
        errs = [worst_error(net, model, torch.randn(b, *shape, dtype=D)) for b in (2, 3)]
        print(f"{name:28s} worst relative error: batch 2 {errs[0]:.1e}, batch 3 {errs[1]:.1e}", flush=True)
    for name, kw, shape in REFUSED:
        try:
            from_torch(_no_dropout(tm.create_model(name, num_classes=10, **kw)), shape)
            print(f"{name:28s} accepted")
        except TinyclError as e:
            print(f"{name:28s} refused: {e}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
