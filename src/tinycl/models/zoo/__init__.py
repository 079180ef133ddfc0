"""tinycl.models.zoo."""
