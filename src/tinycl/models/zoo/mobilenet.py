"""``mobilenet-v1``: MobileNetV1 (Howard et al. 2017) with Caffe-style layer names.

Default set-up of the AR1*/latent-replay code that Quantized Latent Replay builds on:
width 1.0, 3x128x128 input (CORe50), 50 classes. Each conv child is
``Sequential(conv, norm, relu)``; ReLU as in the Caffe and pytorchcv models
(the TensorFlow one uses ReLU6). The final pool is a global average
(the reference's ``AvgPool2d(4)`` at 128x128 input is the same thing).

Top-level index of ``conv5_4/dw`` is 19, the same as AR1's ``latent_layer_num=19``
in Avalanche's flattened list (see docs/zoo.md).
"""

from __future__ import annotations

from torch import nn

from tinycl.models.registry import register_model
from tinycl.models.zoo._layers import (check_input_shape, check_positive_int, check_width, conv_block,
                                       head, named, resolve_norm, scale_channels)

NAME = "mobilenet-v1"

# (caffe name, output channels, stride of the depthwise conv), for width 1.0.
_DWS = [("conv2_1", 64, 1), ("conv2_2", 128, 2),
        ("conv3_1", 128, 1), ("conv3_2", 256, 2),
        ("conv4_1", 256, 1), ("conv4_2", 512, 2),
        ("conv5_1", 512, 1), ("conv5_2", 512, 1), ("conv5_3", 512, 1),
        ("conv5_4", 512, 1), ("conv5_5", 512, 1), ("conv5_6", 1024, 2),
        ("conv6", 1024, 1)]


@register_model(NAME)
def mobilenet_v1(num_classes: int = 50, input_shape=(3, 128, 128), norm: str = "bn", norm_layer=None,
                 width: float = 1.0) -> nn.Sequential:
    """conv1 (3x3 stride 2, 32 ch), 13 depthwise-separable pairs, pool, flatten, fc.

    Channels are ``scale_channels(c, width)`` = ``max(8, int(c * width))``.
    """
    c, _, _ = check_input_shape(NAME, input_shape)
    check_positive_int(NAME, "num_classes", num_classes)
    width = check_width(NAME, width)
    nf = resolve_norm(NAME, norm, norm_layer)
    cin = scale_channels(32, width)
    children: list[tuple[str, nn.Module]] = [("conv1", conv_block(c, cin, 3, stride=2, padding=1, norm_fn=nf))]
    for name, cout, stride in _DWS:
        cout = scale_channels(cout, width)
        children.append((f"{name}/dw", conv_block(cin, cin, 3, stride=stride, padding=1, groups=cin, norm_fn=nf)))
        children.append((f"{name}/sep", conv_block(cin, cout, 1, norm_fn=nf)))
        cin = cout
    children += head(cin, num_classes)
    return named(children)
