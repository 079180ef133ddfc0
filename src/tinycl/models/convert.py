"""Import a torch ``nn.Module`` into a tinycl :class:`Network`.

Supported: Conv2d (zeros padding, dilation 1), Linear, BatchNorm2d (affine), ReLU, ReLU6,
LeakyReLU, MaxPool2d and AvgPool2d (floor mode), AdaptiveAvgPool2d(1), Flatten
(start_dim 1), Dropout, Identity, nested Sequential and :class:`tinycl.models.blocks.Residual`.
Anything else raises :class:`UnsupportedLayerError` naming the layer's path and type.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import TinyclError, UnsupportedLayerError
from . import layers as T
from .blocks import Residual as TorchResidual
from .network import Network, Residual, Sequential

SUPPORTED = ("Conv2d", "Linear", "BatchNorm2d", "ReLU", "ReLU6", "LeakyReLU", "MaxPool2d", "AvgPool2d",
             "AdaptiveAvgPool2d(1)", "Flatten", "Dropout", "Identity", "Sequential", "Residual")


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _unsupported(path, m, why=""):
    where = path or "<root>"
    extra = f" ({why})" if why else f"; supported: {', '.join(SUPPORTED)}"
    return UnsupportedLayerError(f"layer '{where}' of type {type(m).__name__} is not supported{extra}")


def _t(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone()


# Extra layer types (e.g. a hardware-friendly normalisation) register a converter:
# torch module type -> fn(module, path) -> tinycl Layer.
CONVERTERS: dict[type, callable] = {}


def register_converter(module_type: type, fn) -> None:
    """Teach :func:`from_torch` a new torch layer type."""
    CONVERTERS[module_type] = fn


_BUILTIN = (nn.Sequential, nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.MaxPool2d,
            nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout, nn.Identity)


def convert(m: nn.Module, path: str = "", frozen: bool = False, root_training: bool = False) -> T.Layer:
    """Convert one module (recursively) to a tinycl layer tree.

    ``frozen``: the root (``root_training``) is in training mode and this submodule, or one
    around it, in eval mode: a frozen BatchNorm keeps its running statistics and an
    eval-mode Dropout does nothing, as in torch.
    """

    def child(c, name):
        return convert(c, pre + name, frozen or (root_training and not c.training), root_training)

    pre = path + "." if path else ""
    for t, fn in CONVERTERS.items():
        if isinstance(m, t):
            return fn(m, path)
    base = next((b for b in _BUILTIN if isinstance(m, b)), None)
    if base is not None and type(m).forward is not base.forward:
        raise _unsupported(path, m, f"a subclass of {base.__name__} with its own forward")
    if isinstance(m, nn.Sequential):
        return Sequential(path, [child(c, n) for n, c in m.named_children()])
    if isinstance(m, TorchResidual):
        return Residual(path, *(child(getattr(m, k), k) for k in ("body", "shortcut", "post")))
    if isinstance(m, nn.Conv2d):
        if _pair(m.dilation) != (1, 1) or m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise _unsupported(path, m, "needs dilation 1, zeros padding and numeric padding")
        return T.Conv2d(path, _t(m.weight), None if m.bias is None else _t(m.bias), _pair(m.stride),
                        _pair(m.padding), m.groups)
    if isinstance(m, nn.Linear):
        return T.Linear(path, _t(m.weight), None if m.bias is None else _t(m.bias))
    if isinstance(m, nn.BatchNorm2d):
        if not m.affine or not m.track_running_stats or m.momentum is None:
            raise _unsupported(path, m, "needs affine=True, track_running_stats=True and a numeric momentum")
        return T.BatchNorm2d(path, _t(m.weight), _t(m.bias), _t(m.running_mean), _t(m.running_var),
                             _t(m.num_batches_tracked), m.eps, m.momentum, frozen_stats=frozen)
    if isinstance(m, nn.ReLU):
        return T.Activation(path, "relu")
    if isinstance(m, nn.ReLU6):
        return T.Activation(path, "relu6")
    if isinstance(m, nn.LeakyReLU):
        return T.Activation(path, "leaky_relu", m.negative_slope)
    if isinstance(m, nn.MaxPool2d):
        if _pair(m.dilation) != (1, 1) or m.ceil_mode:
            raise _unsupported(path, m, "needs dilation 1 and ceil_mode=False")
        return T.MaxPool2d(path, _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding))
    if isinstance(m, nn.AvgPool2d):
        if m.ceil_mode or m.divisor_override or (not m.count_include_pad and _pair(m.padding) != (0, 0)):
            raise _unsupported(path, m, "needs ceil_mode=False, no divisor_override, count_include_pad with padding")
        return T.AvgPool2d(path, _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding))
    if isinstance(m, nn.AdaptiveAvgPool2d):
        if _pair(m.output_size) != (1, 1):
            raise _unsupported(path, m, "only output_size 1 (global average pooling)")
        return T.GlobalAvgPool(path)
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise _unsupported(path, m, "only start_dim=1, end_dim=-1")
        return T.Flatten(path)
    if isinstance(m, nn.Dropout):
        return T.Dropout(path, 0.0 if frozen else m.p)
    if isinstance(m, nn.Identity):
        return T.Identity(path)
    raise _unsupported(path, m)


def from_torch(module: nn.Module, input_shape, precision="fp32", impl: str = "aten",
               channels_last: bool | None = None) -> Network:
    """A tinycl :class:`Network` with the weights, buffers and structure of ``module``.

    ``input_shape`` is one sample's shape, e.g. ``(3, 32, 32)``. The conversion is checked
    by running one zero sample through both networks in eval mode and comparing shapes.
    ``channels_last`` (default: on for image inputs with ``impl="aten"``) keeps activations
    and conv weights in NHWC memory order, which oneDNN runs faster; values are unchanged.
    """
    if impl not in ("aten", "im2col"):
        raise TinyclError(f"unknown impl {impl!r}; allowed: aten, im2col")
    net = Network(convert(module, root_training=module.training), tuple(input_shape), precision, impl,
                  channels_last)
    net.training = module.training
    dtype = next((p.dtype for p in module.parameters()), torch.float32)
    probe = torch.zeros((1, *net.input_shape), dtype=dtype)
    flags = {m: m.training for m in module.modules()}  # restored exactly: eval() would clobber them
    try:
        module.eval()
        with torch.no_grad():
            ref = module(probe)
    except Exception as e:  # noqa: BLE001 - a shape mismatch in the user's module
        raise TinyclError(f"the module does not accept input shape {net.input_shape}: {e}") from None
    finally:
        for m, t in flags.items():
            m.training = t
    out = net.predict(probe)
    if out.shape != ref.shape:
        raise TinyclError(f"imported network gives output shape {tuple(out.shape)}, torch gives {tuple(ref.shape)}")
    return net
