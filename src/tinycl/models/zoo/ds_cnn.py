"""``ds-cnn``: the MLPerf Tiny keyword-spotting DS-CNN (reference: mlcommons/tiny,
``keras_model.py`` model ``ds_cnn``; topology from Zhang et al., "Hello Edge", 2017).

Input 1x49x10 (49 MFCC frames x 10 coefficients), 64 channels, 12 classes.
Differences from the Keras reference (docs/zoo.md):
- first conv: Keras ``padding='same'`` with stride 2 pads 4/5 rows and 1/1 columns
  (asymmetric); PyTorch pads symmetrically, so we use padding (5, 1), which gives
  the same 25x5 output;
- the final pool is a global average over 25x5 (the reference pools 24x5 valid,
  which drops the last row); parameter and MAC counts are unchanged.
"""

from __future__ import annotations

from torch import nn

from tinycl.models.registry import register_model
from tinycl.models.zoo._layers import (check_input_shape, check_positive_int, check_width, conv_block,
                                       head, named, resolve_norm, scale_channels)

NAME = "ds-cnn"


@register_model(NAME)
def ds_cnn(num_classes: int = 12, input_shape=(1, 49, 10), norm: str = "bn", norm_layer=None,
           width: float = 1.0, blocks: int = 4) -> nn.Sequential:
    """conv1 (10x4, stride 2) + dropout, ``blocks`` depthwise-separable pairs, pool, fc.

    Children: ``conv1``, ``drop1``, ``ds1/dw``, ``ds1/pw``, ..., ``ds4/pw``, ``drop2``,
    ``pool``, ``flatten``, ``fc``. Channels: ``scale_channels(64, width)``.
    """
    c, _, _ = check_input_shape(NAME, input_shape)
    check_positive_int(NAME, "num_classes", num_classes)
    check_positive_int(NAME, "blocks", blocks)
    ch = scale_channels(64, check_width(NAME, width))
    nf = resolve_norm(NAME, norm, norm_layer)
    children: list[tuple[str, nn.Module]] = [
        ("conv1", conv_block(c, ch, (10, 4), stride=2, padding=(5, 1), norm_fn=nf)),
        ("drop1", nn.Dropout(0.2)),
    ]
    for i in range(1, blocks + 1):
        children.append((f"ds{i}/dw", conv_block(ch, ch, 3, padding=1, groups=ch, norm_fn=nf)))
        children.append((f"ds{i}/pw", conv_block(ch, ch, 1, norm_fn=nf)))
    children.append(("drop2", nn.Dropout(0.4)))
    children += head(ch, num_classes)
    return named(children)
