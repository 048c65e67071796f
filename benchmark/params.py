"""Constrained types for the hyper-parameters of methods and recipes.

Method and recipe fields are plain dataclass fields; the config loader validates user values against
their annotations with pydantic, so a field typed :data:`Count` refuses ``epochs: -3`` (exit 2,
nothing written) instead of silently training for no epochs. Plug-in methods can use them too.
"""

from typing import Annotated

from pydantic import Field

#: epochs, batch sizes, iterations: at least 1
Count = Annotated[int, Field(ge=1)]
#: optional amounts where 0 means "none" (warm-up epochs, held-out samples)
NonNegativeInt = Annotated[int, Field(ge=0)]
#: learning rates and step sizes
PositiveFloat = Annotated[float, Field(gt=0)]
#: momenta and weight decays
NonNegativeFloat = Annotated[float, Field(ge=0)]
