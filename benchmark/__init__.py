"""The core of ebyd-bench: registries, the method API, training, caching and the grid runner."""
