"""ebyd-bench: an open benchmark of backdoor defenses built around "Expose Before You Defend".

Subpackages: :mod:`ebyd_bench.benchmark` (registries, methods, training, the grid runner),
:mod:`ebyd_bench.attacks_registry` (attacks), :mod:`ebyd_bench.adapters` (datasets, victims,
OpenBackdoor), :mod:`ebyd_bench.results` (the record schema and store) and
:mod:`ebyd_bench.reports` (leaderboards, tables, figures). ``docs/architecture.md`` draws how they
depend on each other.
"""

__version__ = "0.1.0"
