"""Text exposures and defenses (docs/methods.md §1.10, §2.2, §2.4, §4, §5.1.1, §7.1.1, §7.4).

Importing this package registers the text exposure and defenses under their own names —
``cul_text``, ``rp_text``, ``recover_text``, ``ft_text`` and ``onion`` — each with
``domain = "text"``; :mod:`ebyd_bench.benchmark.domains.text` runs text grids.
"""

from ebyd_bench.benchmark.text import cul, ft, onion, recover, rp  # noqa: F401
