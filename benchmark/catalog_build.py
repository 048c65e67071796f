"""Rebuild ``catalog.json`` (see :mod:`~ebyd_bench.benchmark.catalog`) from the live registries.

    python -m ebyd_bench.benchmark.catalog_build          # writes benchmark/catalog.json
    python -m ebyd_bench.benchmark.catalog_build --check  # exit 1 if the checked-in file is stale
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
from typing import Any

from ebyd_bench.benchmark.catalog import (CATALOG_PATH, describe_live, parameter_dataclass, settable_parameters,
                                          source_digest, to_json)
from ebyd_bench.benchmark.io import atomic_write_text
from ebyd_bench.benchmark.registries import ALL, DOMAINS, TEXT_BACKENDS

REGISTRIES = {**ALL, DOMAINS.kind: DOMAINS, TEXT_BACKENDS.kind: TEXT_BACKENDS}


def build() -> dict[str, Any]:
    """Every built-in entry of every registry, described from its live object."""
    entries: dict[str, dict[str, Any]] = {}
    for kind, registry in REGISTRIES.items():
        registry._load_builtins()  # describe what the modules register, whatever the old catalog says
        entries[kind] = {name: to_json(describe_live(kind, name, obj), annotations(kind, obj))
                         for name in registry.names() if registry.source(name) == "builtin"
                         for obj in [registry.get(name)]}
    return {"source_digest": source_digest(), "entries": entries}


def annotations(kind: str, obj: Any) -> dict[str, str]:
    """Each parameter's annotation as written in the source (modules use ``from __future__ import annotations``)."""
    if kind == "models":
        return {p.name: _text(p.annotation) for p in settable_parameters(obj).values()}
    target = parameter_dataclass(kind, obj)
    return {} if target is None else {f.name: _text(f.type) for f in dataclasses.fields(target) if f.init}


def _text(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return "Any"
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", repr(annotation))


def render(catalog: dict[str, Any]) -> str:
    return json.dumps(catalog, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render(build())
    if "--check" in argv:
        current = CATALOG_PATH.read_text(encoding="utf-8") if CATALOG_PATH.exists() else ""
        if current != text:
            print(f"{CATALOG_PATH} is stale: run python -m ebyd_bench.benchmark.catalog_build", file=sys.stderr)
            return 1
        return 0
    atomic_write_text(CATALOG_PATH, text)
    print(f"wrote {CATALOG_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
