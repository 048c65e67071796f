"""Method specifications: a registered name plus parameters, and building typed objects from them.

A grid names every attack, exposure and defense as ``name`` or ``{name: ..., param: ...}``
(:class:`MethodSpec`); :func:`build_method` looks the name up in its registry and instantiates the
dataclass with type- and range-checked parameters, turning every problem into one
:class:`~ebyd_bench.benchmark.errors.ConfigError` that names the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass
from typing import Any, Callable

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from ebyd_bench.benchmark.catalog import Param, dataclass_params, describe
from ebyd_bench.benchmark.errors import ConfigError
from ebyd_bench.benchmark.registry import Registry, UnknownNameError


class MethodSpec(BaseModel):
    """A registered name plus keyword parameters; written as ``name`` or ``{name: ..., param: ...}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    #: display name in tables, to tell apart two entries of one method with different parameters
    label: str | None = None
    #: attacks only: train this attack for these seeds instead of the grid's ``seeds`` (e.g. three
    #: clean controls, ``{name: none, seeds: [0, 1, 2]}``, for model-level detection rates)
    seeds: tuple[int, ...] | None = None

    @classmethod
    def parse(cls, raw: Any) -> "MethodSpec":
        if isinstance(raw, str):
            return cls(name=raw)
        if isinstance(raw, dict) and isinstance(raw.get("name"), str):
            label = raw.get("label")
            if label is not None and not isinstance(label, str):
                raise ValueError(f"'label' must be a string, got {label!r}")
            seeds = raw.get("seeds")
            if seeds is not None:
                seeds = tuple(_distinct_ints(seeds, f"{raw['name']}: 'seeds'"))
            return cls(name=raw["name"], label=label, seeds=seeds,
                       params={k: v for k, v in raw.items() if k not in ("name", "label", "seeds")})
        raise ValueError(f"expected a name or a mapping with a 'name' key, got {raw!r}")

    def to_raw(self) -> str | dict[str, Any]:
        """The form :meth:`parse` reads: the bare name, or ``{name, **params, label?, seeds?}``."""
        raw: dict[str, Any] = {"name": self.name, **self.params}
        if self.label is not None:
            raw["label"] = self.label
        if self.seeds is not None:
            raw["seeds"] = list(self.seeds)
        return self.name if len(raw) == 1 else raw

    @property
    def shown(self) -> str:
        """The name tables, records and progress bars show: the ``label``, else the method's name."""
        return self.label or self.name

    @property
    def identity(self) -> str:
        """Hashable identity: the name plus a digest of the parameters."""
        return f"{self.name}:{json.dumps(self.params, sort_keys=True, default=str)}"


def _distinct_ints(values: Any, where: str) -> list[int]:
    if (not isinstance(values, (list, tuple)) or not values or len(set(values)) != len(values)
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in values)):
        raise ValueError(f"{where} must be a non-empty list of distinct integers, got {values!r}")
    return list(values)


def check_params(allowed: dict[str, Param], given: dict[str, Any], where: str) -> dict[str, Any]:
    """``given`` checked against the parameters a registry entry takes (:class:`~ebyd_bench.benchmark.catalog.Param`):
    every name known, every value of its type and in its range, every required one present. Returns the
    values coerced to their types; any problem is one :class:`ConfigError` that names the parameter."""
    values = {}
    for key, value in given.items():
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{where}: unknown parameter '{key}'{hint} (parameters: {', '.join(allowed) or 'none'})")
        try:
            values[key] = pydantic.TypeAdapter(allowed[key].type).validate_python(value, strict=False)
        except pydantic.ValidationError as exc:
            raise ConfigError(f"{where}: parameter '{key}': {_pydantic_message(exc)}") from None
    missing = [k for k, p in allowed.items() if p.required and k not in values]
    if missing:
        raise ConfigError(f"{where}: missing parameter(s) {', '.join(missing)}")
    return values


def build_dataclass(cls: type, params: dict[str, Any], where: str) -> Any:
    """Instantiate a dataclass from user parameters with type checking and clear errors."""
    values = check_params(dataclass_params(cls), params, where)
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def build_method(registry: Registry, spec: MethodSpec, where: str) -> Any:
    """Look ``spec.name`` up in ``registry`` and instantiate it with ``spec.params``."""
    try:
        cls = registry.get(spec.name)
    except UnknownNameError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return build_dataclass(cls, spec.params, f"{where} '{spec.name}'")


def _pydantic_message(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(parts)


@dataclass(frozen=True)
class ModelFactory:
    """A registered model factory with the grid's ``model.params`` checked against its signature.

    Calling it builds a victim: ``factory(num_classes=10)``; ``overrides`` (e.g. another norm layer
    for masked pruning, ``pretrained=False`` to reload a cached victim) are the harness's own."""

    name: str
    params: dict[str, Any]  # as validated (coerced to the annotated types)
    factory: Callable[..., Any]

    @classmethod
    def checked(cls, name: str, params: dict[str, Any]) -> "ModelFactory":
        from ebyd_bench.benchmark.registries import MODELS

        where = f"model '{name}'"
        try:
            values = check_params(describe(MODELS, name).params, params, where)
        except UnknownNameError as exc:
            raise ConfigError(f"model: {exc}") from None
        return cls(name, values, MODELS.get(name))

    @property
    def domain(self) -> str:
        return getattr(self.factory, "domain", "image")

    def __call__(self, num_classes: int, **overrides: Any) -> Any:
        return self.factory(num_classes=num_classes, **{**self.params, **overrides})
