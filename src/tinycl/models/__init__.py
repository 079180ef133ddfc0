"""tinycl.models."""
