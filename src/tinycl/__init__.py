"""tinycl: on-device continual learning for resource-constrained hardware."""

__version__ = "0.1.0"

from .models.convert import from_onnx, from_torch  # noqa: E402

__all__ = ["__version__", "from_torch", "from_onnx"]
