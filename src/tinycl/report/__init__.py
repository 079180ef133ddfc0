"""tinycl.report."""
