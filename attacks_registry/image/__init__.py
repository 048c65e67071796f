"""Image attacks; importing this package registers them all."""

from attacks_registry.image import badnets, blend, none, wanet  # noqa: F401
