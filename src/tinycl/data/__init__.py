"""tinycl.data."""
