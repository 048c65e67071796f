"""Grid configuration: a YAML file validated on load.

Every problem (wrong type, unknown method, bad parameter, a value outside its range, poison rate
outside (0, 1]) becomes one :class:`ConfigError` whose message names the field; the CLI prints it and
exits with code 2 before anything is written. ``ebyd-bench run --set KEY=VALUE`` changes a setting
for one run (:func:`apply_overrides`) before the same validation.

Example::

    name: quick
    dataset: {name: cifar10, train_subset: 25000, test_subset: 2000}
    model: {name: resnet18_narrow}
    recipe: {name: quick, epochs: 8, schedule: onecycle}
    attacks: [badnets, blend, {name: wanet, poison_rate: 0.08}]
    exposures: [cul]
    defenses: [none, rp]
    seeds: [0]
"""

from __future__ import annotations

import copy
import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, Sequence

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ebyd_bench.benchmark.errors import ConfigError
from ebyd_bench.benchmark.registry import Registry, UnknownNameError
from ebyd_bench.benchmark.training import TrainRecipe


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


class DatasetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "cifar10"
    train_subset: int | None = Field(None, gt=0, description="victim training images (None = all)")
    test_subset: int | None = Field(None, gt=0, description="test images evaluated (None = all)")
    defense_size: int = Field(500, gt=0, description="|D_d|, drawn from the training split")
    defense_in_training: bool = Field(
        False, description="ablation: also train the victim on D_d (clean), as the reference code does; "
                           "by default D_d is held out of victim training")
    download: bool = False


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "resnet18"
    params: dict[str, Any] = Field(default_factory=dict)


class GridConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "grid"
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    recipe: dict[str, Any] = Field(default_factory=dict)
    attacks: list[MethodSpec]
    exposures: list[MethodSpec] = Field(default_factory=list)
    defenses: list[MethodSpec] = Field(default_factory=lambda: [MethodSpec(name="none")])
    seeds: list[int] = Field(default_factory=lambda: [0])
    trace_eval_size: int = Field(500, gt=0, description="test images per trajectory step (BEM traces)")
    detection_eval_size: int = Field(1000, gt=0, description="clean and triggered inputs scored by input filters")
    device: str = "cpu"

    @field_validator("attacks", "exposures", "defenses", mode="before")
    @classmethod
    def _parse_specs(cls, raw: Any) -> list[MethodSpec]:
        if not isinstance(raw, list):
            raise ValueError("expected a list")
        return [MethodSpec.parse(r) for r in raw]

    @field_validator("attacks", "defenses")
    @classmethod
    def _non_empty(cls, specs: list[MethodSpec]) -> list[MethodSpec]:
        if not specs:
            raise ValueError("must list at least one entry")
        return specs

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        return _distinct_ints(seeds, "seeds")

    @field_validator("exposures", "defenses")
    @classmethod
    def _seeds_are_per_attack(cls, specs: list[MethodSpec]) -> list[MethodSpec]:
        for spec in specs:
            if spec.seeds is not None:
                raise ValueError(f"{spec.name}: 'seeds' is an attack option (which models to train)")
        return specs

    @field_validator("attacks", "exposures", "defenses")
    @classmethod
    def _distinct_entries(cls, specs: list[MethodSpec], info: ValidationInfo) -> list[MethodSpec]:
        """Tables group records by these names, so two entries that share one would be merged like seeds."""
        if info.field_name == "attacks":
            names = [s.name for s in specs]
            hint = "an attack is listed once per grid (its 'seeds' train several models)"
        else:
            names = [s.shown for s in specs]
            hint = "give each setting a distinct 'label'"
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"{', '.join(map(repr, repeated))} listed more than once: {hint}")
        return specs

    def models(self) -> list[tuple[int, MethodSpec]]:
        """(seed, attack) of every poisoned model, seed-major: the grid's seeds, or an attack's own."""
        seeds = sorted({s for a in self.attacks for s in (a.seeds or self.seeds)})
        return [(s, a) for s in seeds for a in self.attacks if s in (a.seeds or self.seeds)]

    def to_raw(self) -> dict[str, Any]:
        """A plain mapping that :func:`validate_config` turns back into this config (for ``OUT/config.yaml``)."""
        raw = self.model_dump(mode="json")
        for key in ("attacks", "exposures", "defenses"):
            raw[key] = [spec.to_raw() for spec in getattr(self, key)]
        return raw

    def train_recipe(self) -> Any:
        """TrainRecipe for image datasets, TextRecipe for text ones (their loader has ``domain = "text"``)."""
        from ebyd_bench.benchmark.registries import DATASETS

        if getattr(DATASETS.get(self.dataset.name), "domain", "image") == "text":
            from ebyd_bench.benchmark.text.training import TextRecipe

            if self.dataset.defense_in_training:
                raise ValueError("dataset.defense_in_training is an image-only ablation")

            return build_dataclass(TextRecipe, self.recipe, "recipe")
        return build_dataclass(TrainRecipe, self.recipe, "recipe")


def _distinct_ints(values: Any, where: str) -> list[int]:
    if (not isinstance(values, (list, tuple)) or not values or len(set(values)) != len(values)
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in values)):
        raise ValueError(f"{where} must be a non-empty list of distinct integers, got {values!r}")
    return list(values)


def build_dataclass(cls: type, params: dict[str, Any], where: str) -> Any:
    """Instantiate a dataclass from user parameters with type checking and clear errors."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(params) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown parameter(s) {unknown}; valid: {sorted(names)}")
    hints = typing.get_type_hints(cls, include_extras=True)  # keeps the benchmark.params constraints
    values = {}
    for key, value in params.items():
        try:
            values[key] = pydantic.TypeAdapter(hints[key]).validate_python(value, strict=False)
        except pydantic.ValidationError as exc:
            raise ConfigError(f"{where}: parameter '{key}': {_pydantic_message(exc)}") from None
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


def load_config(path: str | Path) -> GridConfig:
    """Read and fully validate a single-grid YAML (every method name and parameter is checked)."""
    configs = load_configs(path)
    if len(configs) != 1:
        raise ConfigError(f"{path}: holds {len(configs)} grids (YAML documents); expected one")
    return configs[0]


def load_configs(path: str | Path, overrides: Sequence[str] = ()) -> list[GridConfig]:
    """Every grid of a YAML file: one per ``---``-separated document (e.g. one per dataset), each validated
    after the ``KEY=VALUE`` ``overrides`` (see :func:`apply_overrides`) are applied to it."""
    path = Path(path)
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not docs or not all(isinstance(d, dict) for d in docs):
        raise ConfigError(f"{path}: expected a mapping at the top level of every document")
    where = f"{path} with --set {' '.join(overrides)}" if overrides else str(path)
    configs = [validate_config(apply_overrides(d, overrides), where) for d in docs]
    if len({c.name for c in configs}) != len(configs):
        raise ConfigError(f"{path}: the grids of one file need distinct names")
    return configs


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of a grid's YAML mapping with ``KEY=VALUE`` settings on top (``ebyd-bench run --set``).

    KEY is a dotted path (``recipe.epochs``, ``model.params.width``; missing mappings are created);
    VALUE is read as YAML (``4``, ``[0, 1]``, ``[none, {name: rp, lr: 0.05}]``) and replaces what was
    there. The result is validated like the file itself, and a run records it in ``OUT/config.yaml``.
    """
    out = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. recipe.epochs=4")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None
        node = out
        for depth, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: '{'.'.join(parts[:depth + 1])}' is not a mapping")
        node[parts[-1]] = value
    return out


def validate_config(raw: dict[str, Any], where: str = "config") -> GridConfig:
    from ebyd_bench.benchmark.registries import ATTACKS, DATASETS, DEFENSES, EXPOSURES, MODELS

    try:
        cfg = GridConfig.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise ConfigError(f"{where}: {_pydantic_message(exc)}") from None
    for spec in cfg.attacks:
        build_method(ATTACKS, spec, f"{where}: attack")
    for spec in cfg.exposures:
        if spec.name != "none":
            build_method(EXPOSURES, spec, f"{where}: exposure")
    for spec in cfg.defenses:
        build_method(DEFENSES, spec, f"{where}: defense")
    for registry, name, key in ((DATASETS, cfg.dataset.name, "dataset"), (MODELS, cfg.model.name, "model")):
        try:
            registry.get(name)
        except UnknownNameError as exc:
            raise ConfigError(f"{where}: {key}: {exc}") from None
    from ebyd_bench.benchmark.text.domain import check_domains

    try:
        check_domains(cfg)  # e.g. an image defense in a text grid, or a text attack on CIFAR-10
        cfg.train_recipe()
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return cfg
