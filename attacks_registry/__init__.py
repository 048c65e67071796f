"""The attack registry: image attacks in :mod:`ebyd_bench.attacks_registry.image`, one file per attack.

Look attacks up through :data:`ebyd_bench.benchmark.registries.ATTACKS`; ``ATTACKS.get("badnets")`` is the class.
"""
