"""tinycl.cl."""
