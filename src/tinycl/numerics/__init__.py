"""tinycl.numerics."""
