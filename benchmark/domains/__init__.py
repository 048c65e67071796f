"""One :class:`~ebyd_bench.benchmark.grid.domain.Domain` per modality (image, text)."""
