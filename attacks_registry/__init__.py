"""The attack registry: image attacks in :mod:`attacks_registry.image`, one file per attack.

Look attacks up through :data:`benchmark.registries.ATTACKS`; ``ATTACKS.get("badnets")`` is the class.
"""
