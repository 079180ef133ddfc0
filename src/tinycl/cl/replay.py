"""The replay memories of the strategies, each with its quantizer beside it.

A latent memory stores front latents at ``lr_bits`` (the quantizer is calibrated on the
first experience's latents, as at deployment); a raw memory stores uint8 inputs losslessly
and gets the bytes a full latent memory of ``n_replays`` slots would hold.
"""

from __future__ import annotations

import torch

from ..numerics.latent_quant import LatentQuantizer
from .footprint import replay_budget_bytes
from .memory import ReplayMemory

CALIBRATION = 2048  # latents used to fit the quantizer


def latent_quantizer(cfg: dict, calibration: torch.Tensor) -> LatentQuantizer:
    """The replay quantizer of the config (``lr_bits``, granularity, clipping), fitted."""
    q = LatentQuantizer(cfg["lr_bits"], cfg["lr_granularity"], cfg["lr_clipping"], seed=cfg["seed"])
    q.fit(calibration[:CALIBRATION])
    return q


def latent_memory(cfg: dict, first_latents: torch.Tensor, policy: str | None = None) -> ReplayMemory:
    """``n_replays`` slots of latents at ``lr_bits`` (policy: the config's ``replacement``)."""
    q = latent_quantizer(cfg, first_latents)
    return ReplayMemory(cfg["n_replays"], q, policy or cfg["replacement"], seed=cfg["seed"])


def raw_memory(cfg: dict, setup, first_latents: torch.Tensor, policy: str | None = None) -> ReplayMemory:
    """Raw uint8 inputs in the bytes of a full latent memory of ``n_replays`` slots (policy: the
    config's ``replacement``)."""
    q = latent_quantizer(cfg, first_latents)
    budget = replay_budget_bytes(cfg["n_replays"], setup.latent_shape, q)
    raw_q = LatentQuantizer(8, "tensor", "minmax", seed=cfg["seed"])  # 0..255 -> codes 0..255: lossless
    raw_q.fit(torch.tensor([0.0, 255.0]).view(2, 1, 1, 1).expand(2, *setup.dataset.image_shape))
    per_sample = replay_budget_bytes(1, setup.dataset.image_shape, raw_q) - raw_q.metadata_nbytes()
    capacity = max(1, (budget - raw_q.metadata_nbytes()) // per_sample)
    return ReplayMemory(int(capacity), raw_q, policy or cfg["replacement"], seed=cfg["seed"])


def through(q: LatentQuantizer, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """``x`` quantized and dequantized by the replay quantizer: new latents on the replayed ones' grid.

    With ``lr_quantize_new`` the back trains only on latents as the memory returns them, so it
    cannot learn to tell replayed (old-class) samples from new ones by their quantization noise.
    Evaluation still sees the front's latents as they are.
    """
    return torch.cat([q.decode(q.encode(x[i:i + chunk])) for i in range(0, len(x), chunk)]) if len(x) else x
