"""Content-addressed artifact cache shared by every grid.

An artifact (a poisoned model, an exposed model, a defended model) is stored under the hash of
everything that determines it: ``<root>/<kind>/<key[:2]>/<key>.safetensors`` for the tensors and
``<key>.json`` for the metadata, which carries the SHA-256 of the tensor file. Writes are atomic
(temp file + rename, tensors before metadata, so metadata means "complete"); :meth:`lock` makes
concurrent runners wait instead of computing the same artifact twice. Nothing is unpickled:
tensors come back through safetensors, metadata through JSON.

Files kept outside that keyed layout (the decoded datasets, ``<root>/datasets/<name>-<hex16>.npz``)
carry a SHA-256 sidecar (``<name>-<hex16>.json``) written after them: :func:`save_checksummed` and
:func:`checksum_problem` give them the same guarantees, and ``ebyd-bench cache ls/verify/rm`` lists,
checks and removes them like any artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch
from filelock import FileLock
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from ebyd_bench.benchmark.errors import CacheError
from ebyd_bench.benchmark.io import atomic_write, atomic_write_json, cache_lock


def stable_hash(obj: Any) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (sorted keys, tuples as lists)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()


#: fields added to key payloads after caches existed, with the value that means "as before": a
#: field at that value is left out of the key, so caches built before it existed stay valid, and
#: any other value enters the key as usual.
LATER_FIELDS: dict[str, Any] = {"precision": "fp32", "defense_in_training": False, "group_by_length": False,
                               "fraction": 0.0, "prune_bias": False, "decision_frr": None, "compile": "off"}


def key_stable(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` without the later-added fields that still hold their "as before" value."""
    return {k: v for k, v in payload.items() if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}


def _json_default(o: Any) -> Any:
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"cannot hash a {type(o).__name__} in a cache key")


def rm_command(root: Path, keys: list[str], kind: str | None = None) -> str:
    """The ``ebyd-bench cache rm`` command that removes these entries from the cache at ``root``."""
    kind_option = f" --kind {kind}" if kind else ""
    return f"ebyd-bench cache rm {' '.join(keys)}{kind_option} --cache-dir {shlex.quote(str(root))}"


@dataclass
class Artifact:
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------- checksummed files (decoded datasets)
#: the folder of the decoded datasets under a cache root
DATASETS_DIR = "datasets"


def checksum_sidecar(path: str | os.PathLike) -> Path:
    """The SHA-256 sidecar of a checksummed file: ``cifar10-<hex>.npz`` → ``cifar10-<hex>.json``."""
    return Path(path).with_suffix(".json")


def save_checksummed(path: str | os.PathLike, writer: Callable[[Path], None],
                     info: dict[str, Any] | None = None) -> None:
    """Write ``path`` atomically through ``writer(tmp_path)``, then its sidecar (its SHA-256 and size
    plus ``info``), also atomically: a sidecar means the file is complete (any old one goes first, so
    a crash in between leaves a file without a sidecar, never a stale sidecar). Call it under the
    file's lock (:func:`~ebyd_bench.benchmark.io.cache_lock`)."""
    path = Path(path)
    checksum_sidecar(path).unlink(missing_ok=True)
    atomic_write(path, writer)
    atomic_write_json(checksum_sidecar(path), {**(info or {}), "file": path.name, "sha256": file_sha256(path),
                                               "size": path.stat().st_size})


def read_sidecar(path: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar of ``path`` as a dict; None when absent or unreadable."""
    try:
        info = json.loads(checksum_sidecar(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def open_checksummed(path: str | os.PathLike) -> tuple[BinaryIO | None, str | None]:
    """``(file, None)``: ``path`` opened for reading, its bytes checked against its sidecar; else
    ``(None, why not)``, and ``(None, None)`` when neither the file nor its sidecar exists. The bytes
    checked are those handed back (one open file), so a writer replacing the file meanwhile cannot
    slip another copy in between the check and the read."""
    path, sidecar = Path(path), checksum_sidecar(path)
    info = read_sidecar(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None, (f"incomplete: {sidecar.name} without {path.name}" if sidecar.exists() else None)
    try:
        if info is None or not isinstance(info.get("sha256"), str):
            problem = (f"unreadable checksum sidecar {sidecar.name}" if sidecar.exists() else
                       f"no checksum sidecar {sidecar.name} (an interrupted write or an older version)")
        else:
            size = os.fstat(f.fileno()).st_size
            problem = None
            if isinstance(info.get("size"), int) and size != info["size"]:
                problem = f"truncated or altered: {size} bytes, its sidecar recorded {info['size']}"
            elif hashlib.file_digest(f, "sha256").hexdigest() != info["sha256"]:
                problem = f"corrupted: its SHA-256 does not match {sidecar.name}"
    except BaseException:
        f.close()
        raise
    if problem is not None:
        f.close()
        return None, problem
    f.seek(0)
    return f, None


def checksum_problem(path: str | os.PathLike) -> str | None:
    """Why a checksummed file cannot be used (absent, no sidecar, truncated, altered), or None."""
    f, problem = open_checksummed(path)
    if f is not None:
        f.close()
        return None
    return problem or f"absent: {Path(path).name}"


class ArtifactCache:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser()

    def _base(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / key

    def tensor_path(self, kind: str, key: str) -> Path:
        return self._base(kind, key).with_suffix(".safetensors")

    def meta_path(self, kind: str, key: str) -> Path:
        return self._base(kind, key).with_suffix(".json")

    def lock(self, kind: str, key: str) -> FileLock:
        return cache_lock(self._base(kind, key))

    def exists(self, kind: str, key: str) -> bool:
        return self.meta_path(kind, key).exists()

    def verify(self, kind: str, key: str) -> dict[str, Any] | None:
        """Metadata of a complete, uncorrupted artifact; None when absent; :class:`CacheError` otherwise."""
        meta_path, tensor_path = self.meta_path(kind, key), self.tensor_path(kind, key)
        if not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CacheError(f"corrupted cache metadata {meta_path}: {exc}; clear it with "
                             f"`{rm_command(self.root, [key[:12]], kind)}` and run again to recompute") from None
        if not tensor_path.exists() or file_sha256(tensor_path) != meta.get("tensor_sha256"):
            raise CacheError(f"corrupted cache file {tensor_path}: its checksum does not match {meta_path.name}; "
                             f"clear it with `{rm_command(self.root, [key[:12]], kind)}` and run again to recompute")
        return meta

    def load(self, kind: str, key: str) -> Artifact | None:
        """The artifact, or None when absent; :class:`CacheError` when a file is corrupted."""
        meta = self.verify(kind, key)
        if meta is None:
            return None
        tensor_path = self.tensor_path(kind, key)
        try:
            tensors = load_file(str(tensor_path))
        except (SafetensorError, OSError) as exc:
            raise CacheError(f"unreadable cache file {tensor_path}: {exc}") from None
        return Artifact(tensors, meta)

    def save(self, kind: str, key: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Atomically store tensors, then metadata (with the tensor file's checksum)."""
        tensor_path = self.tensor_path(kind, key)
        # serialised in memory and written by Python, so a full disk is an OSError (ENOSPC) like any other write
        data = safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
        atomic_write(tensor_path, lambda tmp: tmp.write_bytes(data))
        try:
            atomic_write_json(self.meta_path(kind, key), {**meta, "key": key, "tensor_sha256": hashlib.sha256(data).hexdigest()})
        except OSError:  # no metadata, no entry: do not leave the tensors behind either
            tensor_path.unlink(missing_ok=True)
            raise
