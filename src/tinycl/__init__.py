"""tinycl: on-device continual learning for resource-constrained hardware."""

__version__ = "0.1.0"

__all__ = ["__version__"]
