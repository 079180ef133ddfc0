"""Exact memory footprint of a learner on the device, in bytes, by component."""

from __future__ import annotations

import math

from ..numerics.formats import BYTES
from ..numerics.latent_quant import LatentQuantizer
from ..numerics.packing import row_nbytes
from ..numerics.precision import get_precision

ENTRY_IDS = 4  # int16 label + int16 experience id per stored sample (see cl.memory)


def replay_budget_bytes(capacity: int, sample_shape, quantizer: LatentQuantizer) -> int:
    """Bytes of a full replay memory: payload rows, labels, experience ids, quantizer metadata."""
    d = math.prod(sample_shape)
    row = d * (quantizer.storage_bits // 8) if quantizer.is_float else row_nbytes(d, quantizer.bits)
    return capacity * (row + ENTRY_IDS) + quantizer.metadata_nbytes()


def _memory_bytes(memory) -> int:
    """Allocated bytes of a replay memory, or of a strategy's memory (with what it stores per slot)."""
    if memory is None:
        return 0
    if hasattr(memory, "memory_bytes"):
        return memory.memory_bytes(allocated=True)["total"]
    return memory.nbytes(allocated=True)["total"]


def footprint(setup, learner, memory, cfg) -> dict:
    """Bytes held by the front, the back (weights, gradients, optimizer state), the replay memory
    (``memory``: a ReplayMemory, a strategy, or None), and the largest training batch of latents. Activations kept for backward are in the
    ``tinycl profile`` memory planner, which models their lifetimes per device."""
    prec = get_precision(cfg["precision"])
    n_back = sum(p.numel() for p in learner.net.named_parameters().values())
    front = setup.front.nbytes() if hasattr(setup.front, "nbytes") else \
        4 * sum(p.numel() for p in setup.front.parameters())
    master = 4 * n_back if (prec.master_weights and not prec.is_fp32) else 0
    momentum = 4 * n_back if cfg["momentum"] else 0
    batch = (cfg["batch_size"] + cfg["replay_batch"]) * math.prod(setup.latent_shape) * BYTES[prec.activations]
    out = {
        "front_weights": int(front),
        "back_weights": n_back * BYTES[prec.weights],
        "back_master_weights": master,
        "back_gradients": n_back * BYTES[prec.gradients],
        "optimizer_state": momentum,
        "replay_memory": _memory_bytes(memory),
        "latent_batch": int(batch),
    }
    out["total"] = sum(out.values())
    return out
