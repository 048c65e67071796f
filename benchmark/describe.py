"""``ebyd-bench ls KIND NAME``: one registered entry in full — its description and every parameter a
grid may set (type with its allowed range, default, and the note written next to it in the source)."""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from typing import Any

from ebyd_bench.benchmark.registry import Registry
from ebyd_bench.benchmark.catalog import describe_live

_BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
_FIELD_NOTE = re.compile(r"^\s+(\w+)\s*:[^=]*=.*?#\s*(.+)$")
_ROLE = re.compile(r":\w+:`~?([^`]+)`")  # :data:`GRID` → GRID


def describe(registry: Registry, name: str) -> str:
    """The text ``ls KIND NAME`` prints for ``name`` (an unknown name raises the registry's error)."""
    obj = registry.get(name)
    header = f"{name}  ({registry.source(name)})"
    if getattr(obj, "category", None):
        header += f"  [{obj.category}]"
    lines = [header, "", plain_doc(obj.__doc__) or "(no description)", ""]
    if registry.kind == "datasets":
        return "\n".join(lines + ["grid fields: dataset: {name: %s, train_subset, test_subset, defense_size} "
                                   "(see docs/configuration.md)" % name])
    rows = parameters(obj, registry.kind)
    if not rows:
        return "\n".join(lines + ["no parameters"])
    where = ("model: {name: %s, params: {<parameter>: <value>}}" if registry.kind == "models"
             else "{name: %s, <parameter>: <value>}") % name
    width, type_width = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    lines.append(f"parameters (in a grid: {where}):")
    for param, kind, default, note in rows:
        text = f"  {param:<{width}}  {kind:<{type_width}}  = {default}"
        lines.append(f"{text}  # {note}" if note else text)
    return "\n".join(lines)


def plain_doc(doc: str | None) -> str:
    """A docstring as a terminal shows it: dedented, reST roles and double backticks removed."""
    return _ROLE.sub(r"\1", inspect.cleandoc(doc or "")).replace("``", "")


def parameters(obj: Any, kind: str = "attacks") -> list[tuple[str, str, str, str]]:
    """(name, type, default, note) of every parameter a grid may set: a dataclass's init fields, or a
    model factory's keyword arguments except those the harness supplies (``kind="models"``)."""
    notes = field_notes(obj) if dataclasses.is_dataclass(obj) else {}
    return [(name, type_text(p.type) if p.type is not Any else "", "(required)" if p.required else repr(p.default),
             notes.get(name, "")) for name, p in describe_live(kind, "", obj).params.items()]


def type_text(hint: Any) -> str:
    """A type as ``ls`` prints it: ``Annotated[int, Field(ge=1)]`` → ``int ≥ 1``, ``Literal['a', 'b']`` →
    ``'a' | 'b'``, ``float | None`` as is."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return " ".join([type_text(args[0]), *_bounds(args[1:])])
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("None" if a is type(None) else type_text(a) for a in args)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else type_text(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(hint, "__name__", str(hint))


def _bounds(metadata: tuple) -> list[str]:
    """``≥ 1`` and the like from Annotated metadata (a pydantic ``Field`` keeps them in ``.metadata``)."""
    out = []
    for item in metadata:
        for constraint in getattr(item, "metadata", [item]):
            out += [f"{sign} {getattr(constraint, k)}" for k, sign in _BOUNDS.items()
                    if getattr(constraint, k, None) is not None]
    return out


def field_notes(cls: type) -> dict[str, str]:
    """The ``# comment`` on each field's line in the class source (a subclass's note wins)."""
    notes: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for line in source.splitlines():
            match = _FIELD_NOTE.match(line)
            if match and match.group(1) in getattr(klass, "__annotations__", {}):
                notes[match.group(1)] = match.group(2).strip()
    return notes
