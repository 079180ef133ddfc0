"""torchvision models as `tinycl run --model tests/tv_factory.py:NAME` factories (for the CLI tests)."""

import sys
import types


def mobilenet_v2(num_classes, input_shape):
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import torchvision.models as tvm
    return tvm.mobilenet_v2(num_classes=num_classes, width_mult=0.35)
