"""tinycl.models.zoo: built-in models, registered on import (see tinycl.models.registry)."""

from tinycl.models.zoo import ds_cnn, mobilenet, resnet, tinycl_net, vgg  # noqa: F401
