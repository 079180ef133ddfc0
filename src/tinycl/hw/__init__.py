"""tinycl.hw."""
