"""Arena size of the generated learner, in bytes (mirrors ``walk`` in export/c/tc_engine.c).

Blocks, each rounded up to 8 bytes, with ``B = max_new + replay_batch``:
front tensors (1 byte per value, one sample; placed by :func:`front_offsets`, so tensors
that are never alive together share bytes), the last event's latent codes
(``max_new`` samples), back activations and gradients (4 bytes per value with FP32, 2 with
FP16; B samples; no gradient for the latent input), one scratch gradient of the largest
other tensor, parameter gradients (4 or 2 bytes), BN batch statistics (mean and 1/std per
channel, float), batch labels (int32), two lists of replay slots (int32 per slot), one row
of codes, one flag per back tensor; FP16 only: one float latent row and one float channel
plane of the largest pooled tensor (a pool backward sums in float there).
"""

from __future__ import annotations

import math

from .plan import Plan


def _a8(n: int) -> int:
    return (int(n) + 7) // 8 * 8


def front_offsets(plan: Plan) -> tuple[list[int], int]:
    """Byte offset of each front tensor in the front block, and the block's size.

    A tensor lives from the op that writes it (the input: from the start) to its last
    reader (the front's output: to the end); an op's output never overlaps its inputs.
    First fit, in op order, each tensor rounded up to 8 bytes.
    """
    sizes = [_a8(math.prod(s)) for s in plan.front_shapes]
    n = len(sizes)
    last = [0] * n
    for i, op in enumerate(plan.front):
        for t in op.inputs:
            last[t] = i
    last[n - 1] = len(plan.front)
    offs = [0] * n
    live = {0: (0, sizes[0])}
    peak = sizes[0]
    for i, op in enumerate(plan.front):
        at = 0
        for o, sz in sorted(live.values()):
            if at + sizes[op.output] <= o:
                break
            at = max(at, o + sz)
        offs[op.output] = at
        live[op.output] = (at, sizes[op.output])
        peak = max(peak, at + sizes[op.output])
        for t in [t for t in live if t != op.output and last[t] <= i]:
            del live[t]
    return offs, peak


def element_bytes(plan: Plan) -> int:
    """Bytes of one value of the back's activations, gradients and weight copies."""
    return 2 if plan.precision == "fp16" else 4


def arena_blocks(plan: Plan) -> dict[str, int]:
    """Bytes per arena part (each block rounded up to 8 bytes)."""
    B, es, fp16 = plan.max_new + plan.replay_batch, element_bytes(plan), plan.precision == "fp16"
    bn = [math.prod(s) for s in plan.back_shapes]
    params = [v.numel() for op in plan.back for v in op.params.values()]
    bns = [op.params["weight"].numel() for op in plan.back if op.kind == "batchnorm"]
    planes = [plan.back_shapes[op.inputs[0]][1] * plan.back_shapes[op.inputs[0]][2] for op in plan.back
              if op.kind in ("maxpool", "avgpool")]
    return {
        "front_tensors": front_offsets(plan)[1],
        "latent_codes": _a8(plan.max_new * bn[0]),
        "activations": sum(_a8(B * v * es) for v in bn),
        "gradients": sum(_a8(B * v * es) for v in bn[1:]) + _a8(B * max(bn[1:]) * es),
        "param_gradients": sum(_a8(es * v) for v in params),
        "bn_stats": sum(_a8(8 * c) for c in bns),
        "labels_indices_codes": _a8(4 * B) + 2 * _a8(4 * plan.capacity) + _a8(bn[0]) + _a8(len(bn)),
        "fp16_float_rows": _a8(4 * bn[0]) + _a8(4 * max(planes, default=0)) if fp16 else 0,
    }


def arena_bytes(plan: Plan) -> int:
    """Total arena bytes that ``tinycl_init`` needs."""
    return sum(arena_blocks(plan).values())


def state_bytes(plan: Plan) -> dict[str, int]:
    """Bytes of the learner's state outside the arena: back weights (float master copy; FP16: and
    the kernels' FP16 copy) and momenta (RAM), replay memory rows, labels, experience ids and
    counters (RAM), front weights (flash, const)."""
    back = sum(v.numel() for op in plan.back for v in op.params.values())
    bnrun = sum(2 * op.params["weight"].numel() for op in plan.back if op.kind == "batchnorm")
    front = sum(v.numel() * v.element_size() for op in plan.front for v in op.params.values())
    copy = 2 * back if plan.precision == "fp16" else 0
    return {"back_weights": 4 * back + copy, "momenta": 4 * back, "bn_running": 4 * bnrun,
            "replay_rows": plan.capacity * plan.row_bytes, "replay_labels_experiences": 4 * plan.capacity,
            "front_const": front}
