"""Victim architectures, registered in :data:`ebyd_bench.benchmark.registries.MODELS`."""
