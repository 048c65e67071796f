"""Victim architectures, registered in :data:`benchmark.registries.MODELS`."""
