"""Detection and removal defenses (reference §6, §7); importing this package registers them."""

from benchmark.defenses import no_defense, rp  # noqa: F401
