"""Backdoor exposures (docs/methods.md §5); importing this package registers them."""

from ebyd_bench.benchmark.exposures import awp, cft, cul, pruning  # noqa: F401
