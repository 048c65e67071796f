"""Constrained types for the hyper-parameters of methods and recipes.

Method and recipe fields are plain dataclass fields; the config loader validates user values against
their annotations with pydantic, so a field typed :data:`Count` refuses ``epochs: -3`` (exit 2,
nothing written) instead of silently training for no epochs, and :func:`check_ranges` (called by
``Method.__post_init__`` and the recipes) applies the same checks to objects built in Python.
Integers refuse booleans (``epochs: true`` is not one epoch); floats refuse booleans, NaN and
infinities. Plug-in methods can use these types too.
"""

import dataclasses
import functools
import math
import typing
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, TypeAdapter, ValidationError


def _not_a_bool(value: Any) -> Any:
    """YAML's ``true``/``false`` are Python bools, which are ints: refuse them where a number is meant
    (``epochs: true`` would otherwise train for one epoch)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got the boolean {str(value).lower()}")
    return value


def _finite(value: Any) -> Any:
    """A float field takes no bool, NaN or infinity (``lr: .inf`` would train a NaN model)."""
    value = _not_a_bool(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value}")
    return value


_INT = BeforeValidator(_not_a_bool)
_FLOAT = BeforeValidator(_finite)

#: epochs, batch sizes, iterations: at least 1
Count = Annotated[int, _INT, Field(ge=1)]
#: optional amounts where 0 means "none" (warm-up epochs, held-out samples)
NonNegativeInt = Annotated[int, _INT, Field(ge=0)]
#: learning rates and step sizes (finite)
PositiveFloat = Annotated[float, _FLOAT, Field(gt=0, allow_inf_nan=False)]
#: momenta and weight decays (finite)
NonNegativeFloat = Annotated[float, _FLOAT, Field(ge=0, allow_inf_nan=False)]
#: rates, fractions and blend weights: a finite float in [0, 1]
Probability = Annotated[float, _FLOAT, Field(ge=0, le=1, allow_inf_nan=False)]
#: mask thresholds, quantiles: a finite float strictly between 0 and 1 (0 or 1 would select nothing or all)
OpenFraction = Annotated[float, _FLOAT, Field(gt=0, lt=1, allow_inf_nan=False)]
#: poisoning rates, portions that must select something: a finite float in (0, 1]
PositiveFraction = Annotated[float, _FLOAT, Field(gt=0, le=1, allow_inf_nan=False)]
#: multiplicative growth factors (a cost that must increase when multiplied): a finite float > 1
GrowthFactor = Annotated[float, _FLOAT, Field(gt=1, allow_inf_nan=False)]
#: any finite float (a score threshold that may be negative)
FiniteFloat = Annotated[float, _FLOAT, Field(allow_inf_nan=False)]
#: a non-empty sweep of thresholds or rates, each strictly between 0 and 1
OpenFractions = Annotated[tuple[OpenFraction, ...], Field(min_length=1)]
#: a non-empty sweep of positive magnitudes (perturbation bounds)
PositiveFloats = Annotated[tuple[PositiveFloat, ...], Field(min_length=1)]
#: non-empty tuples of weights ≥ 0 (NAD's per-layer β)
NonNegativeFloats = Annotated[tuple[NonNegativeFloat, ...], Field(min_length=1)]
#: tuples of epoch counts (a schedule's milestones; empty = none)
Counts = tuple[Count, ...]
#: a non-empty tuple of words (triggers)
Words = Annotated[tuple[Annotated[str, Field(min_length=1)], ...], Field(min_length=1)]

#: seeds: what numpy (``np.random.seed``) and torch accept alike
SEED_LIMIT = 2**32
Seed = Annotated[int, _INT, Field(ge=0, lt=SEED_LIMIT)]
#: which samples an attack poisons: any class, relabelled to the target ("dirty"), or only samples of
#: the target class, keeping their labels ("clean")
LabelMode = Literal["dirty", "clean"]
#: a clean control's poison rate: nothing
NoPoison = Annotated[float, _FLOAT, Field(ge=0, le=0)]
#: a CIFAR ResNet's channel width; below 8 oneDNN (torch's CPU kernels) hangs in the channels-last 1×1
#: convolution backward and corrupts memory in double backward (I-BAU), measured with torch 2.14
MIN_WIDTH = 8
Width = Annotated[int, _INT, Field(ge=MIN_WIDTH)]


def check_ranges(obj: Any) -> None:
    """Raise ValueError when a field of the dataclass ``obj`` lies outside the range its annotation
    allows, so a method built in Python (``DEFENSES.get("rp")(epochs=-3)``) is refused like a grid."""
    for name, adapter in _ranged_fields(type(obj)).items():
        try:
            adapter.validate_python(getattr(obj, name))
        except ValidationError as exc:
            owner = getattr(type(obj), "registry_name", type(obj).__name__)
            raise ValueError(f"{owner}: parameter '{name}': {exc.errors()[0]['msg']}") from None


@functools.cache
def _ranged_fields(cls: type) -> dict[str, TypeAdapter]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: TypeAdapter(hints[f.name]) for f in dataclasses.fields(cls)
            if f.init and _has_bounds(hints.get(f.name))}


def _has_bounds(hint: Any) -> bool:
    return typing.get_origin(hint) is Annotated or any(_has_bounds(a) for a in typing.get_args(hint))
