"""Text attacks (docs/methods.md §4), one file per attack; importing this package registers them all."""

from ebyd_bench.attacks_registry.text import badnet_rw, badnet_sl, lwp, ripple, sos, syntactic  # noqa: F401
