"""tinycl.kernels."""
