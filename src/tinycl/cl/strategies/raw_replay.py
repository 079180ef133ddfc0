"""``raw_replay``: replay raw uint8 inputs through the (INT8) front, in the bytes of latent replay.

The memory gets the bytes a full latent memory of ``n_replays`` slots would hold
(:func:`tinycl.cl.replay.raw_memory`); every replayed image runs the front again. The same
memory is ``replay: raw`` for derpp, er_ace and gdumb (:class:`.latent_replay.Stored`).
"""

from .base import register
from .latent_replay import LatentReplay


@register
class RawReplay(LatentReplay):
    name = "raw_replay"
    replays_per_step = True
    quantize_new = False
    raw = True  # always raw images (the ``replay`` key is not needed)
    raw_ok = True
