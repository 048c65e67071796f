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
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ebyd_bench.benchmark.catalog import Description, describe
from ebyd_bench.benchmark.errors import ConfigError
from ebyd_bench.benchmark.params import SEED_LIMIT
from ebyd_bench.benchmark.registries import ATTACKS, DATASETS, DEFENSES, DOMAINS, EXPOSURES, MODELS
from ebyd_bench.benchmark.registry import Registry, UnknownNameError
from ebyd_bench.benchmark.specs import (MethodSpec, ModelFactory, _distinct_ints, _pydantic_message, build_dataclass,
                                       build_method, check_params)


class DatasetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "cifar10"
    train_subset: int | None = Field(None, gt=0, description="victim training images (None = all)")
    test_subset: int | None = Field(None, gt=0, description="test images evaluated (None = all)")
    defense_size: int = Field(500, gt=0, description="|D_d|, drawn from the training split")
    defense_in_training: bool = Field(
        False, description="ablation: also train the victim on D_d (clean), as the public EBYD code does; "
                           "by default D_d is held out of victim training")
    download: bool = False


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "resnet18"
    params: dict[str, Any] = Field(default_factory=dict)


#: what a grid ``name`` may be: it becomes a folder (``OUT/<name>/`` for a file of several grids), so no
#: path separators, no ``..``, no leading dot or dash, nothing a shell or another OS would trip over
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


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

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not SAFE_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a safe folder name: use letters, digits, '.', '_' and '-' "
                             f"(starting with a letter or digit, at most 100 characters), e.g. quick-cifar10")
        return name

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


@dataclass(frozen=True)
class ResolvedMethod:
    """A method of the grid: its spec as written and the object built from it once, at load time.

    ``method`` is the configured instance (``None`` for the ``none`` exposure); stages that keep
    state (an attack's trained trigger) work on a fresh copy (:meth:`fresh`)."""

    spec: MethodSpec
    method: Any
    kind: str  # "attack", "exposure" or "defense"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def shown(self) -> str:
        return self.spec.shown

    def fresh(self) -> Any:
        """A new instance with the same constructor arguments (runs the same checks again)."""
        return dataclasses.replace(self.method)


@dataclass(frozen=True)
class Grid:
    """A validated, resolved grid: what :func:`load_configs` returns and the runner consumes.

    Nothing downstream re-parses raw mappings: methods, recipe and model factory are built once."""

    config: GridConfig
    domain: str  # the dataset's domain ("image", "text"): which :class:`Domain` runs it
    recipe: Any  # the domain's recipe dataclass (TrainRecipe, TextRecipe), as configured
    model: ModelFactory
    attacks: tuple[ResolvedMethod, ...]
    exposures: tuple[ResolvedMethod, ...]
    defenses: tuple[ResolvedMethod, ...]

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def dataset(self) -> DatasetSpec:
        return self.config.dataset

    @property
    def seeds(self) -> list[int]:
        return self.config.seeds

    @property
    def device(self) -> str:
        return self.config.device

    def models(self) -> list[tuple[int, ResolvedMethod]]:
        """(seed, attack) of every poisoned model, seed-major (see :meth:`GridConfig.models`)."""
        by_name = {a.name: a for a in self.attacks}  # attack names are distinct within a grid
        return [(seed, by_name[spec.name]) for seed, spec in self.config.models()]

    def to_raw(self) -> dict[str, Any]:
        return self.config.to_raw()


def load_config(path: str | Path) -> Grid:
    """Read and fully validate a single-grid YAML (every method name and parameter is checked)."""
    configs = load_configs(path)
    if len(configs) != 1:
        raise ConfigError(f"{path}: holds {len(configs)} grids (YAML documents); expected one")
    return configs[0]


def load_configs(path: str | Path, overrides: Sequence[str] = ()) -> list[Grid]:
    """Every grid of a YAML file: one per ``---``-separated document (e.g. one per dataset), each validated
    after the ``KEY=VALUE`` ``overrides`` (see :func:`apply_overrides`) are applied to it. Every document
    is checked (:func:`check_config`, without importing torch) before any is resolved."""
    path = Path(path)
    docs = [d for d in _load_yaml_documents(path) if d is not None]
    if not docs or not all(isinstance(d, dict) for d in docs):
        raise ConfigError(f"{path}: expected a mapping at the top level of every document")
    where = f"{path} with --set {' '.join(overrides)}" if overrides else str(path)
    configs = [check_config(apply_overrides(d, overrides), where) for d in docs]
    if len({c.name for c in configs}) != len(configs):
        raise ConfigError(f"{path}: the grids of one file need distinct names")
    return [_located(resolve, c, where) for c in configs]


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping (PyYAML keeps the last one
    silently, so a duplicated ``epochs:`` would quietly override the first). Merge keys (``<<``) may
    still be overridden, as YAML intends."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _DuplicateKey(key, line, key_node.start_mark.column + 1, seen[key])
                    seen[key] = line
                except TypeError:  # an unhashable key: the base class reports it
                    continue
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int, column: int, first: int) -> None:
        super().__init__(key, line, column, first)
        self.key, self.line, self.column, self.first = key, line, column, first


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A PyYAML error on one line: ``line L, column C: problem (context)``."""
    if isinstance(exc, _DuplicateKey):
        return (f"line {exc.line}, column {exc.column}: duplicate key {exc.key!r} (already set on line {exc.first}; "
                f"a key may appear once per mapping)")
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    return " ".join(f"{where}{problem}{f' ({context})' if context else ''}".split())


def _load_yaml_documents(path: Path) -> list[Any]:
    """The YAML documents of ``path``; any problem (missing, a folder, binary, not UTF-8, bad YAML,
    a duplicated key) is one single-line :class:`ConfigError`."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a YAML config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    if b"\0" in data:
        raise ConfigError(f"{path}: is a binary file (it holds NUL bytes), not a YAML config") from None
    try:
        text = data.decode("utf-8-sig")  # a BOM is fine
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                          f"save the config as UTF-8") from None
    try:
        return list(yaml.load_all(text, Loader=_UniqueKeyLoader))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None


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
            value = yaml.load(text, Loader=_UniqueKeyLoader)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML: {_yaml_problem(exc)}") from None
        node = out
        for depth, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: '{'.'.join(parts[:depth + 1])}' is not a mapping")
        node[parts[-1]] = value
    return out


def validate_config(raw: dict[str, Any], where: str = "config") -> Grid:
    """Validate one grid's mapping (:func:`check_config`) and resolve it (:func:`resolve`)."""
    return _located(resolve, check_config(raw, where), where)


def check_config(raw: dict[str, Any], where: str = "config") -> GridConfig:
    """One grid's mapping, validated: its structure, and every name and parameter against what the
    registries describe (from the catalog, so torch is not imported). Raises one :class:`ConfigError`."""
    try:
        cfg = GridConfig.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise ConfigError(f"{_pydantic_message(exc)} (in {where})") from None
    _located(check, cfg, where)
    return cfg


def _located(step: Any, cfg: GridConfig, where: str) -> Any:
    try:
        return step(cfg)
    except ConfigError as exc:  # the problem first, then where it was found
        raise ConfigError(f"{exc} (in {where})") from None


def check(cfg: GridConfig) -> None:
    """Every name known, every parameter of its type and range, every method and the model of the
    dataset's domain, attack targets and ``defense_size`` within the dataset, the recipe's settings."""
    dataset = _describe(DATASETS, cfg.dataset.name, "dataset")
    domain = _describe(DOMAINS, dataset.domain, "domain")
    entries = [("attack", ATTACKS, s) for s in cfg.attacks]
    entries += [("exposure", EXPOSURES, s) for s in cfg.exposures if s.name != "none"]
    entries += [("defense", DEFENSES, s) for s in cfg.defenses]
    checked = []
    for kind, registry, spec in entries + [("model", MODELS, MethodSpec(name=cfg.model.name, params=cfg.model.params))]:
        desc = _describe(registry, spec.name, kind)
        values = check_params(desc.params, spec.params, f"{kind} '{spec.name}'")
        checked.append((kind, registry, desc, values))
    for kind, registry, desc, _ in checked:
        if desc.name != "none" and desc.domain != dataset.domain:
            fitting = [n for n in registry.names() if describe(registry, n).domain == dataset.domain]
            raise ConfigError(f"{kind} '{desc.name}' is for {desc.domain} data but dataset '{cfg.dataset.name}' is "
                              f"{dataset.domain}; {dataset.domain} {kind}s: {', '.join(fitting)}")
    targets = {desc.name: values.get("target", desc.params["target"].default)
               for kind, _, desc, values in checked if kind == "attack" and "target" in desc.params}
    _check_against_dataset(cfg, dataset, targets)
    check_params(domain.params, cfg.recipe, "recipe")


def resolve(cfg: GridConfig) -> Grid:
    """The :class:`Grid` of a checked config: every method and the recipe instantiated (this imports the
    methods' modules, and with them torch), the model factory bound to its parameters."""
    domain = getattr(DATASETS.get(cfg.dataset.name), "domain", "image")
    domain_cls = DOMAINS.get(domain)
    attacks = tuple(ResolvedMethod(s, build_method(ATTACKS, s, "attack"), "attack") for s in cfg.attacks)
    exposures = tuple(ResolvedMethod(s, None if s.name == "none" else build_method(EXPOSURES, s, "exposure"),
                                     "exposure") for s in cfg.exposures)
    defenses = tuple(ResolvedMethod(s, build_method(DEFENSES, s, "defense"), "defense") for s in cfg.defenses)
    model = ModelFactory.checked(cfg.model.name, cfg.model.params)
    domain_cls.check_config(cfg)
    recipe = build_dataclass(domain_cls.recipe_type, cfg.recipe, "recipe")
    return Grid(cfg, domain, recipe, model, attacks, exposures, defenses)


def _check_against_dataset(cfg: GridConfig, dataset: Description, targets: dict[str, Any]) -> None:
    """What the dataset bounds, from its loader's static metadata (``num_classes``, ``train_size``; either
    may be absent, e.g. a text dataset's size depends on its source): attack targets are classes,
    ``defense_size`` leaves training data, and seeds are what numpy and torch accept."""
    for seed in sorted({seed for seed, _ in cfg.models()}):
        if not 0 <= seed < SEED_LIMIT:
            raise ConfigError(f"seeds: {seed} is outside 0..{SEED_LIMIT - 1} (the seeds numpy and torch accept)")
    classes = dataset.num_classes
    for name, target in targets.items():
        if classes is not None and isinstance(target, int) and not 0 <= target < classes:
            raise ConfigError(f"attack '{name}': parameter 'target': {target} is not a class of dataset "
                              f"'{cfg.dataset.name}' (0..{classes - 1})")
    train_size = dataset.train_size
    if train_size is not None and cfg.dataset.defense_size >= train_size:
        raise ConfigError(f"dataset.defense_size: {cfg.dataset.defense_size} leaves no training data: "
                          f"'{cfg.dataset.name}' has {train_size} training samples; use fewer")


def _describe(registry: Registry, name: str, where: str) -> Description:
    try:
        return describe(registry, name)
    except UnknownNameError as exc:
        raise ConfigError(f"{where}: {exc}") from None
