"""Image attacks; importing this package registers them all."""

from ebyd_bench.attacks_registry.image import (  # noqa: F401
    adv, badnets, blend, dynamic, nash, none, onepixel, sig, smooth, trojan, wanet,
)
