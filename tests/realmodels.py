"""Real library models for the tests: torchvision (CPU torch beside it: stub its compiled-op registry)."""

import sys
import types


def torchvision_models():
    """``torchvision.models``; its builders need none of torchvision's compiled ops."""
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import torchvision.models as tvm
    return tvm
