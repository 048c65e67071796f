"""One small typed registry used for attacks, exposures, defenses, models and datasets.

Entries are registered with a decorator (``@ATTACKS.register("badnets")``), or lazily as a
``"module:attribute"`` string that is imported only on first use. Third-party packages add
entries through the Python entry-point group named by :attr:`Registry.entry_point_group`
(``ebyd_bench.attacks``, ``ebyd_bench.exposures``, ``ebyd_bench.defenses``, ``ebyd_bench.models``,
``ebyd_bench.datasets``). An unknown name raises :class:`UnknownNameError` listing the closest
registered names.

Listing names, testing membership and the "did you mean" of an unknown name need no import: a registry
built with an ``index`` (a function returning the built-in names, or None when it cannot tell) answers
them from it and imports the built-in modules only when an entry itself is asked for.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from importlib import metadata
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised when a name is not registered; the message suggests close matches."""

    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0])


@dataclass
class _Entry:
    target: object  # the registered object, or a "module:attr" string until resolved
    source: str  # "builtin", or "plugin:<distribution>" for entry points


class Registry(Generic[T]):
    """Name → object map with decorator registration, lazy entries and entry-point plugins."""

    def __init__(self, kind: str, builtin_modules: list[str] | None = None,
                 entry_point_group: str | None = None, index: Callable[[], list[str] | None] | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group or f"ebyd_bench.{kind}"
        self._builtin_modules = list(builtin_modules or [])
        self._index = index
        self._entries: dict[str, _Entry] = {}
        self._builtins_loaded = False
        self._plugins_read = False

    def register(self, name: str, *, source: str = "builtin") -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")`` above a class or function."""

        def decorate(obj: T) -> T:
            self.add(name, obj, source=source)
            return obj

        return decorate

    def add(self, name: str, obj: T | str, *, source: str = "builtin") -> None:
        """Register ``obj`` (or a lazy ``"module:attr"`` string) under ``name``."""
        existing = self._entries.get(name)
        if existing is not None and existing.target is not obj and not isinstance(existing.target, str):
            raise ValueError(f"{self.kind} '{name}' is already registered ({existing.source})")
        self._entries[name] = _Entry(obj, source)
        if not isinstance(obj, str):
            _name_it(obj, name)

    def get(self, name: str) -> T:
        """The object registered as ``name``; imports a lazy entry on first use."""
        self._read_plugins()
        if name not in self._entries and name not in self._builtin_names():
            raise UnknownNameError(self._unknown_message(name))
        if name not in self._entries:
            self._load_builtins()
        entry = self._entries.get(name)
        if entry is None:  # named by a stale index, registered by no module
            raise UnknownNameError(self._unknown_message(name))
        if isinstance(entry.target, str):
            module_name, _, attr = entry.target.partition(":")
            entry.target = getattr(importlib.import_module(module_name), attr)
            _name_it(entry.target, name)
        return entry.target  # type: ignore[return-value]

    def source(self, name: str) -> str:
        """"builtin", "plugin:<distribution>", or the source a caller of :meth:`add` named (an unknown name
        raises :class:`UnknownNameError`)."""
        if name not in self:
            raise UnknownNameError(self._unknown_message(name))
        entry = self._entries.get(name)
        return entry.source if entry is not None else "builtin"

    def names(self) -> list[str]:
        self._read_plugins()
        return sorted(set(self._builtin_names()) | set(self._entries))

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _unknown_message(self, name: str) -> str:
        known = self.names()
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} '{name}'{hint} (registered: {', '.join(known)})"

    def _builtin_names(self) -> list[str]:
        """The built-in names, from the index when it can tell, else by importing the built-in modules."""
        names = None if self._index is None or self._builtins_loaded else self._index()
        if names is None:
            self._load_builtins()
            return [n for n, e in self._entries.items() if e.source == "builtin"]
        return names

    def _load_builtins(self) -> None:
        """Import the built-in modules (their decorators register), once."""
        if not self._builtins_loaded:
            self._builtins_loaded = True
            for module_name in self._builtin_modules:
                importlib.import_module(module_name)

    def _read_plugins(self) -> None:
        """Read the entry points once (lazy ``module:attr`` entries; a built-in name cannot be taken)."""
        if self._plugins_read:
            return
        self._plugins_read = True
        builtin = set(self._builtin_names())
        for ep in metadata.entry_points(group=self.entry_point_group):
            dist = ep.dist.name if ep.dist is not None else "unknown"
            if ep.name not in self._entries and ep.name not in builtin:
                self._entries[ep.name] = _Entry(ep.value, f"plugin:{dist}")


def _name_it(obj: object, name: str) -> None:
    """Let a registered class report the name it is registered under (``obj.registry_name``)."""
    if "registry_name" not in getattr(obj, "__dict__", {}):
        try:
            obj.registry_name = name  # type: ignore[attr-defined]
        except (AttributeError, TypeError):
            pass
