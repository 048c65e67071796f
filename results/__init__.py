"""Result records: their schema (:class:`CellRecord`), the durable JSONL store of a grid and loading
many stores into pandas. Imports nothing from ``ebyd_bench.reports``."""

from ebyd_bench.results.schema import SCHEMA_VERSION, CellRecord
from ebyd_bench.results.store import ResultStore, load_records, load_results

__all__ = ["SCHEMA_VERSION", "CellRecord", "ResultStore", "load_records", "load_results"]
