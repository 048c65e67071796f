"""Detection and removal defenses (docs/methods.md §6, §7); importing this package registers them."""

from ebyd_bench.benchmark.defenses import anp, fp, ft, ibau, nad, nc, no_defense, recover, rp, strip  # noqa: F401
