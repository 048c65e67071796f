"""Reports for ebyd-bench: the leaderboard site, paper tables (LaTeX), figures.

Modules: ``tables`` (matrices from records), ``scores`` (DER ranking), ``fields`` / ``detection``
(generic method outputs and detection rates), ``provenance``, ``render`` (Jinja2 + formatting),
``leaderboard`` (HTML/TeX page), ``latex`` (paper tables), ``style`` / ``figures`` (matplotlib),
``cli`` (subcommands). The renderers are imported lazily so the CLI starts fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"render_leaderboard": "leaderboard", "render_tables": "latex", "render_figures": "figures",
            "image_grid": "figures"}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'reports' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
