"""Progress bars that stay out of logs: shown on an interactive terminal, one line per stage elsewhere.

``EBYD_PROGRESS=0`` silences them everywhere (stage workers of a concurrent run set it, so that one
progress display covers the whole run), ``EBYD_PROGRESS=1`` forces them on; by default tqdm decides
(on when stderr is a terminal, off in CI logs and pipes, which would fill with carriage-return frames).
Where the bar is off, a run's :class:`StageDisplay` prints one line per finished stage instead.
"""

from __future__ import annotations

import os
import sys
import time
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


class StageDisplay:
    """A run's one progress display: a bar over its stages on a terminal; elsewhere (CI, ``| tee``)
    one line per finished stage on stderr, ``[3/9, 41 s] train badnets seed=0``; nothing under
    ``EBYD_PROGRESS=0``."""

    def __init__(self, total: int) -> None:
        self.total, self.count, self.start = total, 0, time.monotonic()
        self.bar = progress(total=total, desc="grid", unit="stage", disable=not total or None)
        self.lines = bool(total) and self.bar.disable and os.environ.get("EBYD_PROGRESS") != "0"

    def running(self, label: str) -> None:
        self.bar.set_postfix_str(label, refresh=True)

    def finished(self, label: str) -> None:
        self.count += 1
        self.bar.set_postfix_str(label, refresh=False)
        self.bar.update()
        if self.lines:
            print(f"[{self.count}/{self.total}, {time.monotonic() - self.start:.0f} s] {label}", file=sys.stderr,
                  flush=True)

    def __enter__(self) -> "StageDisplay":
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
