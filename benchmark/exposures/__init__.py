"""Backdoor exposures (reference §5); importing this package registers them."""

from benchmark.exposures import cul  # noqa: F401
