"""Result records: the durable JSONL store of a grid and loading many stores into pandas."""

from ebyd_bench.results.store import ResultStore, load_results

__all__ = ["ResultStore", "load_results"]
