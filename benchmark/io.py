"""Atomic file writes and inter-process locks.

Every file the project writes goes to a temporary sibling first and is renamed into place, so a
crash never leaves a half-written artifact. :func:`cache_lock` makes concurrent runners wait for
each other instead of computing the same artifact twice.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from filelock import FileLock

if TYPE_CHECKING:
    import numpy as np


@contextmanager
def _temp_sibling(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise naming(exc, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def naming(exc: OSError, path: str | os.PathLike) -> OSError:
    """``exc`` with the file it was writing (a failed ``write`` names none), for a one-line message."""
    return exc if exc.filename is not None else OSError(exc.errno, exc.strerror, str(path))


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and rename the result onto ``path``."""
    with _temp_sibling(Path(path)) as tmp:
        writer(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    import numpy as np  # not at the top: the CLI's config check imports this module and must stay fast

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def cache_lock(path: str | os.PathLike, timeout: float = -1) -> FileLock:
    """An inter-process lock guarding ``path`` (a ``.lock`` file next to it)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(p) + ".lock", timeout=timeout)


def default_cache_dir() -> Path:
    """``$EBYD_CACHE_DIR``, else the user's cache folder (``~/.cache/ebyd-bench`` on Linux)."""
    env = os.environ.get("EBYD_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("ebyd-bench"))
