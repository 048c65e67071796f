"""Progress bars that stay out of logs: shown on an interactive terminal, silent elsewhere.

``EBYD_PROGRESS=0`` silences them everywhere (stage workers of a concurrent run set it, so that one
progress display covers the whole run), ``EBYD_PROGRESS=1`` forces them on; by default tqdm decides
(on when stderr is a terminal, off in CI logs and pipes, which would fill with carriage-return frames).
"""

from __future__ import annotations

import os
from typing import Any

from tqdm import tqdm


def progress(*args: Any, **kwargs: Any) -> tqdm:
    """``tqdm(*args, **kwargs)`` with the project's display rule (see the module docstring)."""
    setting = os.environ.get("EBYD_PROGRESS")
    if setting in ("0", "1"):
        kwargs["disable"] = setting == "0" or kwargs.get("disable", False)
    elif "disable" not in kwargs:
        kwargs["disable"] = None  # tqdm: off when stderr is not a terminal
    return tqdm(*args, **kwargs)
