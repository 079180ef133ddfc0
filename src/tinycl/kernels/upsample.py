"""2d upsampling of ``N x C x H x W`` inputs: nearest and bilinear; forward and input gradient.

Semantics of ``F.interpolate``: give exactly one of ``size`` (int or (h, w)) or ``scale_factor``
(number or pair). With a scale factor the output is ``floor(H * scale)`` and, as in torch
(``recompute_scale_factor`` unset), the scale itself sets the source positions:
nearest ``src = floor(dst / scale)``; bilinear (``align_corners=False``)
``src = (dst + 0.5) / scale - 0.5`` clamped at 0. ``align_corners=True`` maps the corner
pixels onto each other: ``src = dst * (H - 1) / (Ho - 1)``.
Backward calls torch's native gradient kernels (each ``dy`` scattered to its sources with the
same weights). Op counts: :func:`tinycl.kernels.macs.upsample_ops`.
"""

from __future__ import annotations

import torch

from ..errors import TinyclError
from .macs import upsample_out_size

__all__ = ["upsample_geometry", "upsample_nearest2d_forward", "upsample_nearest2d_backward",
           "upsample_bilinear2d_forward", "upsample_bilinear2d_backward"]


def _pair(v):
    return (v, v) if not isinstance(v, (tuple, list)) else tuple(v)


def upsample_geometry(in_hw, size=None, scale_factor=None):
    """``((Ho, Wo), (scale_h, scale_w) or (None, None))`` from ``size`` or ``scale_factor``."""
    if (size is None) == (scale_factor is None):
        raise TinyclError("upsampling needs exactly one of size and scale_factor")
    if size is not None:
        out = tuple(upsample_out_size(i, out=o) for i, o in zip(in_hw, _pair(size)))
        scales = (None, None)
    else:
        scales = tuple(float(f) for f in _pair(scale_factor))
        if any(f <= 0 for f in scales):
            raise TinyclError(f"upsampling scale_factor must be positive, got {list(scales)}")
        out = tuple(upsample_out_size(i, scale=f) for i, f in zip(in_hw, scales))
    if len(out) != 2 or any(o <= 0 for o in out):
        raise TinyclError(f"upsampling of a {list(in_hw)} input gives an empty or non-2d output {list(out)}")
    return out, scales


def _check(x_shape):
    if len(x_shape) != 4:
        raise TinyclError(f"2d upsampling expects an N x C x H x W input, got shape {list(x_shape)}")


def upsample_nearest2d_forward(x, size=None, scale_factor=None):
    """Each output pixel copies its nearest source pixel (``mode="nearest"``)."""
    _check(x.shape)
    out, (sh, sw) = upsample_geometry(x.shape[-2:], size, scale_factor)
    return torch.ops.aten.upsample_nearest2d(x, out, sh, sw)


def upsample_nearest2d_backward(dy, x_shape, size=None, scale_factor=None):
    """Sum ``dy`` over the output pixels that copied each input pixel."""
    _check(x_shape)
    out, (sh, sw) = upsample_geometry(x_shape[-2:], size, scale_factor)
    return torch.ops.aten.upsample_nearest2d_backward(dy, out, list(x_shape), sh, sw)


def upsample_bilinear2d_forward(x, size=None, scale_factor=None, align_corners=False):
    """Each output pixel interpolates its four source neighbours (``mode="bilinear"``)."""
    _check(x.shape)
    out, (sh, sw) = upsample_geometry(x.shape[-2:], size, scale_factor)
    return torch.ops.aten.upsample_bilinear2d(x, out, bool(align_corners), sh, sw)


def upsample_bilinear2d_backward(dy, x_shape, size=None, scale_factor=None, align_corners=False):
    """Scatter each ``dy`` to its four source neighbours with the forward's weights."""
    _check(x_shape)
    out, (sh, sw) = upsample_geometry(x_shape[-2:], size, scale_factor)
    return torch.ops.aten.upsample_bilinear2d_backward(dy, out, list(x_shape), bool(align_corners), sh, sw)
