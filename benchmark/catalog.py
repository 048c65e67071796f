"""What the registries hold, without importing torch: names, domains and every settable parameter.

Checking a grid needs each method's parameters and their types, but the methods' modules import
torch, which costs 1–2 s (up to 20 s on a loaded machine). So the built-in entries are described in
``catalog.json`` beside this file: ``ebyd-bench ls``, ``--help`` and config validation read it, and
torch is imported only once a config has passed. The file records a digest of the package's source;
when the source no longer matches it (a method was edited and the catalog not rebuilt), every lookup
uses the live classes instead, so a stale catalog is slow, never wrong. Plug-in entries are always
described from their live objects. Rebuild with ``python -m ebyd_bench.benchmark.catalog_build``
(a test fails while the checked-in catalog is stale).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import inspect
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from ebyd_bench.benchmark import params as _params
from ebyd_bench.benchmark.registry import Registry

CATALOG_PATH = Path(__file__).with_name("catalog.json")
#: the packages whose source the catalog describes (registries import their modules)
SOURCE_PACKAGES = ("ebyd_bench.benchmark", "ebyd_bench.attacks_registry", "ebyd_bench.adapters")
#: factory arguments the harness supplies itself, never a grid
HARNESS_SUPPLIED = frozenset({"num_classes", "norm_layer", "data_root", "cache_dir", "download"})
#: the names a parameter's annotation may use: the types of ``benchmark.params`` and plain builtins
TYPE_NAMES: dict[str, Any] = {
    **{k: v for k, v in vars(_params).items() if not k.startswith("_")},
    "Literal": Literal, "int": int, "float": float, "str": str, "bool": bool, "tuple": tuple,
    "list": list, "dict": dict, "None": None, "Any": Any,
}


@dataclass(frozen=True)
class Param:
    """A parameter a grid may set: its type (with its range, as in ``benchmark.params``) and default."""

    type: Any
    required: bool = False
    default: Any = None


@dataclass(frozen=True)
class Description:
    """One registry entry as config validation and ``ls`` see it."""

    name: str
    domain: str = "image"
    summary: str = ""
    category: str | None = None
    source: str = "builtin"
    #: what a grid may set: a method's constructor fields, a model factory's keyword arguments, or
    #: (for a domain) its recipe's fields
    params: dict[str, Param] = dataclasses.field(default_factory=dict)
    num_classes: int | None = None  # datasets
    train_size: int | None = None  # datasets


def describe(registry: Registry, name: str) -> Description:
    """``name``'s description: from the catalog while it matches the source, else from the live object
    (an unknown name raises the registry's :class:`~ebyd_bench.benchmark.registry.UnknownNameError`)."""
    entries = catalog_entries(registry.kind)
    if entries is not None and name in entries:
        return _from_json(name, entries[name])
    return describe_live(registry.kind, name, registry.get(name), registry.source(name))


def catalog_entries(kind: str) -> dict[str, dict[str, Any]] | None:
    """The catalog's entries of one registry kind, or None when the catalog is missing or stale."""
    catalog = _current_catalog()
    return None if catalog is None else catalog["entries"].get(kind, {})


def catalog_names(kind: str) -> list[str] | None:
    """Built-in names of one registry kind without importing anything, or None (catalog stale)."""
    entries = catalog_entries(kind)
    return None if entries is None else list(entries)


@functools.lru_cache(maxsize=1)
def _current_catalog() -> dict[str, Any] | None:
    try:
        catalog = json.loads(CATALOG_PATH.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return catalog if catalog.get("source_digest") == source_digest() else None


def source_digest() -> str:
    """SHA-256 over the path and bytes of every module of :data:`SOURCE_PACKAGES` (a few milliseconds)."""
    digest = hashlib.sha256()
    for package in SOURCE_PACKAGES:
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            root = Path(folder)
            for path in sorted(root.rglob("*.py")):
                digest.update(f"{package}/{path.relative_to(root).as_posix()}\0".encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------ live descriptions
def describe_live(kind: str, name: str, obj: Any, source: str = "builtin") -> Description:
    """A registered object's description. Its parameters: a method's constructor fields, a model
    factory's keyword arguments (except those the harness supplies), a domain's recipe fields."""
    doc = inspect.cleandoc(obj.__doc__ or "").splitlines()
    return Description(name, getattr(obj, "domain", "image"), doc[0] if doc else "",
                       getattr(obj, "category", None), source, _live_params(kind, obj),
                       getattr(obj, "num_classes", None), getattr(obj, "train_size", None))


def _live_params(kind: str, obj: Any) -> dict[str, Param]:
    if kind == "models":
        hints = typing.get_type_hints(obj, include_extras=True)
        return {p.name: Param(hints.get(p.name, Any), p.default is p.empty,
                              None if p.default is p.empty else p.default)
                for p in settable_parameters(obj).values()}
    target = parameter_dataclass(kind, obj)
    return {} if target is None else dataclass_params(target)


def parameter_dataclass(kind: str, obj: Any) -> type | None:
    """The dataclass whose fields a grid sets for this entry (a method, or a domain's recipe); None for
    datasets and anything else that takes no parameters (models take keyword arguments instead)."""
    target = obj.recipe_type if kind == "domains" else obj
    return None if kind == "datasets" or not dataclasses.is_dataclass(target) else target


def dataclass_params(cls: type) -> dict[str, Param]:
    """A dataclass's constructor fields as parameters (types with their ranges, defaults)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: Param(hints[f.name], *_field_default(f)) for f in dataclasses.fields(cls) if f.init}


def settable_parameters(factory: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The keyword arguments of a model factory that a grid may set (``model.params``)."""
    return {p.name: p for p in inspect.signature(factory).parameters.values()
            if p.name not in HARNESS_SUPPLIED and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _field_default(f: dataclasses.Field) -> tuple[bool, Any]:
    if f.default is not dataclasses.MISSING:
        return False, f.default
    if f.default_factory is not dataclasses.MISSING:
        return False, f.default_factory()
    return True, None


# ------------------------------------------------------------------------------ JSON form
def to_json(desc: Description, annotations: dict[str, str]) -> dict[str, Any]:
    """The catalog form of a description; ``annotations`` are the parameters' types as written in the
    source, each of which must name the same type when read back with :data:`TYPE_NAMES`."""
    params = {}
    for key, param in desc.params.items():
        text = annotations[key]
        try:
            same = read_type(text) == param.type
        except NameError:
            same = False
        if not same:
            raise ValueError(f"{desc.name}: parameter '{key}': its annotation {text!r} does not name a type of "
                             f"ebyd_bench.benchmark.params (or a builtin); define the type there")
        params[key] = {"type": text, "required": param.required, "default": _plain(param.default)}
    out = {k: v for k, v in dataclasses.asdict(desc).items() if k not in ("name", "params", "source") and v is not None}
    return {**out, "params": params}


def read_type(text: str) -> Any:
    """A parameter's type from its annotation text (only :data:`TYPE_NAMES` are visible)."""
    return eval(text, {"__builtins__": {}}, TYPE_NAMES)  # noqa: S307 - the package's own catalog


def _from_json(name: str, entry: dict[str, Any]) -> Description:
    params = {k: Param(read_type(p["type"]), p["required"], p.get("default")) for k, p in entry["params"].items()}
    return Description(name, entry.get("domain", "image"), entry.get("summary", ""), entry.get("category"),
                       "builtin", params, entry.get("num_classes"), entry.get("train_size"))


def _plain(value: Any) -> Any:
    """A default as JSON holds it (tuples become lists; anything else not JSON-able is left out)."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return None
