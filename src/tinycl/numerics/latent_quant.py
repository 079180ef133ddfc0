"""Quantizer for stored latents (replay memory): N-bit affine codes, or FP16/FP32.

Integer formats (``bits`` in 1..8) use unsigned codes ``q`` in ``[0, 2**bits - 1]``::

    q     = clamp(round(x / scale) + zero_point, 0, 2**bits - 1)
    x_hat = (q - zero_point) * scale

``round`` is round-half-to-even (``torch.round``); the arithmetic is fp32.
The calibrated range ``[lo, hi]`` is always widened to contain 0 (``lo <= 0 <= hi``),
so real 0 is exactly a code. For post-ReLU latents (calibrated minimum >= 0) this gives
``lo = 0, zero_point = 0``: an unsigned grid that spends every code on ``[0, hi]``.
``scale = (hi - lo) / (2**bits - 1)`` and ``zero_point = round(-lo / scale)``.
uint8 calibration data with ``bits=8`` gets the dtype's range [0, 255] (scale 1,
zero point 0): raw 8-bit images are then stored losslessly.

Clipping (how ``[lo, hi]`` is chosen on the calibration set):

- ``"minmax"``: the data's min and max (widened to contain 0).
- ``"mse"``: ``[r * lo, r * hi]`` with the ratio ``r`` in (0, 1] (per group) that
  minimises the squared quantization error on the calibration data: a grid of ratios
  ``1/32 .. 1`` then steps of 1/256 around the best one. The search looks at most at
  ``max_search_values`` values in all, split over the groups (at least 1024 each);
  bigger groups are stratified (their extreme values exactly, plus a weighted random
  subset of the rest), and the winner is then checked exactly on all the calibration
  data against ``r = 1`` (minmax). So the MSE choice is never worse than minmax on the
  calibration data.

Granularity: ``"tensor"`` (one scale) or ``"channel"`` (one scale per index of dim 1).

Metadata: each group stores ``scale`` and ``zero_point`` as fp32, i.e. 8 bytes per
group (:meth:`LatentQuantizer.metadata_nbytes`); the bit width and shapes are
configuration, not counted. FP16/FP32 formats store no metadata; FP16 saturates at
+-65504 instead of overflowing to inf.
"""

from __future__ import annotations

import torch

from tinycl.errors import TinyclError

FLOAT_FORMATS = {"fp16": torch.float16, "fp32": torch.float32}
GRANULARITIES = ("tensor", "channel")
CLIPPINGS = ("minmax", "mse")
FP16_MAX = 65504.0
METADATA_BYTES_PER_GROUP = 8  # fp32 scale + fp32 zero point
MIN_SEARCH_PER_GROUP = 1024
COARSE_STEPS = 32
SEARCH_SEED_BASE = 0x51A7E5EED


class LatentQuantizer:
    """Quantize latents to ``bits`` (1..8, unsigned affine codes) or "fp16"/"fp32".

    Use: ``q = LatentQuantizer(4, "channel", "mse").fit(calib)``;
    ``codes = q.encode(x)`` (uint8 codes, same shape as ``x``; a float16/float32
    tensor for the float formats); ``q.decode(codes)`` -> float32.
    """

    def __init__(self, bits=8, granularity: str = "tensor", clipping: str = "minmax",
                 max_search_values: int = 1 << 19, seed: int = 0):
        if isinstance(bits, str):
            if bits not in FLOAT_FORMATS:
                raise TinyclError(f"latent quantizer: bits must be 1..8, 'fp16' or 'fp32', got {bits!r}")
        elif isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
            raise TinyclError(f"latent quantizer: bits must be 1..8, 'fp16' or 'fp32', got {bits!r}")
        if granularity not in GRANULARITIES:
            raise TinyclError(f"latent quantizer: granularity must be one of {GRANULARITIES}, got {granularity!r}")
        if clipping not in CLIPPINGS:
            raise TinyclError(f"latent quantizer: clipping must be one of {CLIPPINGS}, got {clipping!r}")
        if int(max_search_values) < 1:
            raise TinyclError(f"latent quantizer: max_search_values must be >= 1, got {max_search_values}")
        self.bits = bits
        self.granularity = granularity
        self.clipping = clipping
        self.max_search_values = int(max_search_values)
        self.seed = int(seed)
        self.scale: torch.Tensor | None = None       # fp32, shape (groups,)
        self.zero_point: torch.Tensor | None = None  # fp32 (integer-valued), shape (groups,)

    # ------------------------------------------------------------------ properties
    @property
    def is_float(self) -> bool:
        return isinstance(self.bits, str)

    @property
    def storage_bits(self) -> int:
        """Bits per stored value: ``bits``, 16 or 32."""
        return {"fp16": 16, "fp32": 32}.get(self.bits, self.bits) if self.is_float else self.bits

    @property
    def qmax(self) -> int:
        return (1 << self.bits) - 1

    @property
    def fitted(self) -> bool:
        return self.is_float or self.scale is not None

    def clip_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Ends of the representable grid per group: ``(-zp * scale, (qmax - zp) * scale)``."""
        self._need_fit()
        if self.is_float:
            raise TinyclError("latent quantizer: float formats have no clip range")
        return -self.zero_point * self.scale, (self.qmax - self.zero_point) * self.scale

    def metadata_nbytes(self) -> int:
        """Bytes of stored metadata: 8 per group (fp32 scale + fp32 zero point); 0 for floats."""
        if self.is_float:
            return 0
        self._need_fit()
        return METADATA_BYTES_PER_GROUP * self.scale.numel()

    # ------------------------------------------------------------------ calibration
    def fit(self, calib: torch.Tensor) -> "LatentQuantizer":
        """Choose scales and zero points from calibration data (N x ...); returns self."""
        if self.is_float:
            return self
        x = self._check_input(calib, "fit")
        if x.numel() == 0:
            raise TinyclError("latent quantizer: calibration data is empty")
        if calib.dtype == torch.uint8 and self.bits == 8:
            groups = x.shape[1] if self.granularity == "channel" else 1
            self.scale = torch.ones(groups)
            self.zero_point = torch.zeros(groups)
            return self
        v = self._groups(x.float())                       # (G, M)
        lo = v.min(dim=1).values.clamp(max=0.0)
        hi = v.max(dim=1).values.clamp(min=0.0)
        if self.clipping == "mse":
            r = self._search_ratio(v, lo, hi)
            lo, hi = lo * r, hi * r
        self.scale, self.zero_point = self._params(lo, hi)
        return self

    def _params(self, lo: torch.Tensor, hi: torch.Tensor):
        scale = (hi - lo) / self.qmax
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # constant-zero group
        zp = torch.round(-lo / scale).clamp(0, self.qmax)
        return scale.float(), zp.float()

    def _search_set(self, v: torch.Tensor):
        """Values (G, m) and weights (G, m) whose weighted squared error estimates the full one.

        Small groups are used whole (weights 1). Larger groups are stratified: the
        ``m/4`` largest and ``m/4`` smallest values of each group exactly (weight 1; the
        clipping error lives there), plus a uniform random subset of the others weighted
        by (number of others) / (subset size).
        """
        G, M = v.shape
        m = max(MIN_SEARCH_PER_GROUP, self.max_search_values // G)
        if M <= m:
            return v, torch.ones(1, 1)
        k = m // 4
        g = torch.Generator().manual_seed(SEARCH_SEED_BASE + self.seed)  # not the seeds users pick
        score = torch.rand(G, M, generator=g)
        top = v.topk(k, dim=1).indices
        bot = (-v).topk(k, dim=1).indices
        score.scatter_(1, top, 2.0)
        score.scatter_(1, bot, 2.0)
        n_rand = m - 2 * k
        rand = (-score).topk(n_rand, dim=1).indices   # smallest scores: never a tail index
        idx = torch.cat([top, bot, rand], dim=1)
        w = torch.ones(1, m)
        w[0, 2 * k:] = (M - 2 * k) / n_rand
        return v.gather(1, idx), w

    def _sq_err(self, v, w, lo, hi, r) -> torch.Tensor:
        s, z = self._params(lo * r, hi * r)
        d = self._fake(v, s[:, None], z[:, None]).sub_(v)
        return (d.mul_(d).mul_(w)).sum(dim=1)

    def _full_sq_err(self, v, lo, hi, r, chunk: int = 1 << 22) -> torch.Tensor:
        """Exact squared error over all of ``v`` (G, M), in column chunks."""
        step = max(1, chunk // v.shape[0])
        one = torch.ones(1, 1)
        return sum(self._sq_err(v[:, i:i + step], one, lo, hi, r) for i in range(0, v.shape[1], step))

    def _search_ratio(self, v: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Per group, the clipping ratio in (0, 1] with the smallest squared error.

        Grid search on the (stratified) search set, then, when that set is not the
        whole data, an exact comparison on all of ``v`` with r = 1 (minmax), so the
        chosen ratio is never worse than minmax on the calibration data.
        """
        sv, w = self._search_set(v)
        best_r = torch.ones(v.shape[0])
        best_e = self._sq_err(sv, w, lo, hi, 1.0)

        def consider(r):
            nonlocal best_r, best_e
            r = torch.as_tensor(r, dtype=torch.float32).expand_as(best_r)
            e = self._sq_err(sv, w, lo, hi, r)
            better = e < best_e
            best_e = torch.where(better, e, best_e)
            best_r = torch.where(better, r, best_r)

        for k in range(COARSE_STEPS - 1, 0, -1):  # r = 31/32 .. 1/32; ties keep the larger r
            consider(k / COARSE_STEPS)
        centre = best_r.clone()
        for k in range(-7, 8):  # refine in steps of 1/256 around the coarse optimum
            if k:
                consider((centre + k / (8 * COARSE_STEPS)).clamp(1.0 / 256, 1.0))
        if sv.shape[1] < v.shape[1]:
            e_best = self._full_sq_err(v, lo, hi, best_r)
            e_one = self._full_sq_err(v, lo, hi, 1.0)
            best_r = torch.where(e_best < e_one, best_r, torch.ones_like(best_r))
        return best_r

    # ------------------------------------------------------------------ encode/decode
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Float (or uint8) latents -> uint8 codes of the same shape (float formats: fp16/fp32)."""
        self._need_fit()
        x = self._check_input(x, "encode")
        if self.is_float:
            x = x.float()
            if self.bits == "fp16":
                x = x.clamp(-FP16_MAX, FP16_MAX)
            return x.to(FLOAT_FORMATS[self.bits])
        s, z = self._broadcast(x)
        q = torch.round(x.float() / s) + z
        return q.clamp_(0, self.qmax).to(torch.uint8)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (any integer dtype, or the float format's tensor) -> float32 latents."""
        self._need_fit()
        if not isinstance(codes, torch.Tensor):
            raise TinyclError(f"latent quantizer: decode expects a tensor, got {type(codes).__name__}")
        if self.is_float:
            return codes.float()
        if codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise TinyclError(f"latent quantizer: decode expects integer codes, got {codes.dtype}")
        s, z = self._broadcast(codes)
        return (codes.float() - z) * s

    def fake_quant(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x))``."""
        return self.decode(self.encode(x))

    def _fake(self, v, s, z):
        """decode(encode(v)) with the same float operations as encode/decode."""
        q = torch.round(v / s).add_(z).clamp_(0, self.qmax)
        return q.sub_(z).mul_(s)

    def _broadcast(self, x: torch.Tensor):
        if self.granularity == "tensor":
            return self.scale[0], self.zero_point[0]
        if x.dim() < 2 or x.shape[1] != self.scale.numel():
            raise TinyclError(
                f"latent quantizer: per-channel scales for {self.scale.numel()} channels (dim 1), "
                f"got shape {tuple(x.shape)}")
        shape = [1, -1] + [1] * (x.dim() - 2)
        return self.scale.view(shape), self.zero_point.view(shape)

    def _groups(self, x: torch.Tensor) -> torch.Tensor:
        if self.granularity == "tensor":
            return x.reshape(1, -1)
        if x.dim() < 2:
            raise TinyclError(f"latent quantizer: per-channel needs N x C x ... data, got shape {tuple(x.shape)}")
        return x.transpose(0, 1).reshape(x.shape[1], -1)

    def _check_input(self, x, what: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TinyclError(f"latent quantizer: {what} expects a torch tensor, got {type(x).__name__}")
        if x.dtype.is_complex or x.dtype == torch.bool:
            raise TinyclError(f"latent quantizer: {what} got unsupported dtype {x.dtype}")
        if x.dtype.is_floating_point and x.numel() and not bool(torch.isfinite(x).all()):
            raise TinyclError(f"latent quantizer: {what} got NaN or infinite values")
        return x

    def _need_fit(self) -> None:
        if not self.fitted:
            raise TinyclError("latent quantizer: not calibrated; call fit(calibration_data) first")

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        """Plain values and tensors (safe for ``torch.save``)."""
        return {
            "bits": self.bits, "granularity": self.granularity, "clipping": self.clipping,
            "max_search_values": self.max_search_values, "seed": self.seed,
            "scale": None if self.scale is None else self.scale.clone(),
            "zero_point": None if self.zero_point is None else self.zero_point.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        try:
            other = LatentQuantizer(state["bits"], state["granularity"], state["clipping"],
                                    state.get("max_search_values", 1 << 19), state.get("seed", 0))
            scale, zp = state["scale"], state["zero_point"]
        except (KeyError, TypeError) as e:
            raise TinyclError(f"latent quantizer: bad state dict (missing or wrong entry {e})") from None
        if (scale is None) != (zp is None):
            raise TinyclError("latent quantizer: bad state dict (scale and zero_point must both be set or unset)")
        if scale is not None:
            scale = torch.as_tensor(scale, dtype=torch.float32).reshape(-1)
            zp = torch.as_tensor(zp, dtype=torch.float32).reshape(-1)
            if other.is_float or scale.numel() != zp.numel() or scale.numel() == 0 or not bool((scale > 0).all()):
                raise TinyclError("latent quantizer: bad state dict (scale/zero_point shapes or values)")
            if other.granularity == "tensor" and scale.numel() != 1:
                raise TinyclError("latent quantizer: bad state dict (per-tensor quantizer with several scales)")
        self.__dict__.update(other.__dict__)
        self.scale, self.zero_point = scale, zp

    def __repr__(self) -> str:
        return (f"LatentQuantizer(bits={self.bits!r}, granularity={self.granularity!r}, "
                f"clipping={self.clipping!r}, fitted={self.fitted})")
