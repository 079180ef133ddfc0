"""``tinycl-net``: the "Conv + ReLU + Dense" CIFAR-10 model of the TinyCL ASIC.

Ressa et al. (arXiv 2402.09780) name the model but publish no layer sizes in the
abstract, and we found none; the sizes here are an ASSUMPTION (docs/zoo.md):
one 3x3 'valid' conv with 8 output channels, ReLU, flatten, dense to the classes.
The paper's model has no normalisation, so the default here is ``norm="none"``.
"""

from __future__ import annotations

from torch import nn

from tinycl.errors import TinyclError
from tinycl.kernels.macs import conv_out_size
from tinycl.models.registry import register_model
from tinycl.models.zoo._layers import (check_input_shape, check_positive_int, named,
                                       resolve_norm)

NAME = "tinycl-net"


@register_model(NAME)
def tinycl_net(num_classes: int = 10, input_shape=(3, 32, 32), norm: str = "none", norm_layer=None,
               channels: int = 8, kernel: int = 3, padding: int = 0) -> nn.Sequential:
    """conv (channels x kernel x kernel, stride 1) -> [norm] -> relu -> flatten -> fc.

    Children: ``conv``, [``norm``], ``relu``, ``flatten``, ``fc``.
    """
    c, h, w = check_input_shape(NAME, input_shape)
    check_positive_int(NAME, "num_classes", num_classes)
    check_positive_int(NAME, "channels", channels)
    check_positive_int(NAME, "kernel", kernel)
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise TinyclError(f"model '{NAME}': padding must be an int >= 0, got {padding!r}")
    norm_fn = resolve_norm(NAME, norm, norm_layer)
    ho, wo = conv_out_size(h, kernel, 1, padding), conv_out_size(w, kernel, 1, padding)
    if ho < 1 or wo < 1:
        raise TinyclError(f"model '{NAME}': input {h}x{w} is too small for a {kernel}x{kernel} conv "
                          f"with padding {padding}")
    children: list[tuple[str, nn.Module]] = [
        ("conv", nn.Conv2d(c, channels, kernel, stride=1, padding=padding, bias=norm_fn is None))]
    if norm_fn is not None:
        children.append(("norm", norm_fn(channels)))
    children += [("relu", nn.ReLU()),
                 ("flatten", nn.Flatten()),
                 ("fc", nn.Linear(channels * ho * wo, num_classes))]
    return named(children)
