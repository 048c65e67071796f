"""Look after a shared artifact cache: list what it holds, verify it, remove entries.

    ebyd-bench cache ls     [--cache-dir DIR] [--kind KIND]
    ebyd-bench cache verify [--cache-dir DIR] [--kind KIND]
    ebyd-bench cache rm KEY_PREFIX [KEY_PREFIX ...] [--cache-dir DIR] [--kind KIND]

A poisoned model costs minutes to hours to train, so a cache is worth keeping healthy rather than
wiping: ``verify`` re-checks every tensor file against the SHA-256 its metadata recorded and names
the broken entries, and ``rm`` deletes just those (or any others, by key prefix) under the same
lock a runner takes, so a concurrent grid never reads half of a removed artifact.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ebyd_bench.benchmark.cache import ArtifactCache, default_cache_dir
from ebyd_bench.benchmark.errors import BenchmarkError, CacheError

_KEY = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class CacheEntry:
    """One artifact: ``kind`` (models, exposures, attack_parts, ...) and its 64-hex ``key``."""

    kind: str
    key: str
    cache: ArtifactCache

    @property
    def files(self) -> list[Path]:
        paths = (self.cache.meta_path(self.kind, self.key), self.cache.tensor_path(self.kind, self.key))
        return [p for p in paths if p.exists()]

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in self.files)

    @property
    def modified(self) -> float:
        return max((p.stat().st_mtime for p in self.files), default=0.0)

    def meta(self) -> dict[str, Any] | None:
        """The metadata JSON; None when the entry has none (an interrupted write) or it is unreadable."""
        try:
            return json.loads(self.cache.meta_path(self.kind, self.key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def problem(self) -> str | None:
        """Why the entry cannot be used, or None when it verifies."""
        if not self.cache.meta_path(self.kind, self.key).exists():
            return "incomplete: tensors without metadata (an interrupted write); a run recomputes it"
        try:
            self.cache.verify(self.kind, self.key)
        except CacheError as exc:
            return str(exc)
        return None


def entries(cache: ArtifactCache, kind: str | None = None) -> list[CacheEntry]:
    """Every artifact under ``cache.root`` (of one ``kind`` if given), sorted by kind and key."""
    if not cache.root.is_dir():
        raise BenchmarkError(f"no cache at {cache.root}")
    found = set()
    for path in cache.root.glob(f"{kind or '*'}/??/*"):
        stem, _, suffix = path.name.partition(".")
        if suffix in ("json", "safetensors") and _KEY.match(stem) and path.parent.name == stem[:2]:
            found.add((path.parent.parent.name, stem))
    return [CacheEntry(k, key, cache) for k, key in sorted(found)]


def describe(entry: CacheEntry) -> str:
    """One line saying what the artifact is, read from its metadata."""
    meta = entry.meta()
    if meta is None:
        return "(no readable metadata)"
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    if config.get("kind") == "poisoned_model":
        attack, model = config.get("attack", {}), config.get("model", {})
        metrics = meta.get("metrics") or {}
        ca, asr = metrics.get("ca"), metrics.get("asr")
        scores = f"CA {ca:.3f}" + (f", ASR {asr:.3f}" if asr is not None else "") if ca is not None else ""
        return (f"{config.get('dataset', {}).get('name', '?')} {model.get('name', '?')} "
                f"{attack.get('name', '?')} seed={config.get('seed')}  {scores}").rstrip()
    if config.get("kind") == "exposure":
        exposure, parent = config.get("exposure", {}), str(config.get("model", "?"))
        parent_meta = CacheEntry("models", parent, entry.cache).meta() if _KEY.match(parent) else None
        attack = ((parent_meta or {}).get("config") or {}).get("attack", {}).get("name", "?")
        return (f"{exposure.get('name', '?')} of {attack} model {parent[:12]} seed={config.get('seed')}  "
                f"label {meta.get('label')} (share {meta.get('label_share', float('nan')):.2f})")
    name = meta.get("name") or config.get("name")
    return f"{name}" if name else ", ".join(sorted(k for k in meta if k not in ("key", "tensor_sha256")))


def find(cache: ArtifactCache, prefix: str, kind: str | None = None) -> CacheEntry:
    """The single entry whose key starts with ``prefix`` (at least 6 hex digits)."""
    if not re.fullmatch(r"[0-9a-f]{6,64}", prefix):
        raise BenchmarkError(f"'{prefix}' is not a key prefix: give at least 6 lowercase hex digits "
                             f"(the keys `ebyd-bench cache ls` prints)")
    matches = [e for e in entries(cache, kind) if e.key.startswith(prefix)]
    if not matches:
        raise BenchmarkError(f"no artifact with a key starting '{prefix}' in {cache.root}")
    if len(matches) > 1:
        listed = ", ".join(f"{e.kind}/{e.key[:16]}" for e in matches)
        raise BenchmarkError(f"key prefix '{prefix}' is ambiguous ({listed}); give more digits or --kind")
    return matches[0]


def remove(entry: CacheEntry) -> None:
    """Delete the artifact under its lock: metadata first, so no reader ever sees it complete but
    without tensors."""
    with entry.cache.lock(entry.kind, entry.key):
        for path in entry.files:  # metadata, then tensors
            path.unlink(missing_ok=True)


def add_command(sub: argparse._SubParsersAction) -> None:
    cache = sub.add_parser("cache", help="list, verify or remove cached artifacts (poisoned models, exposures, ...)")
    actions = cache.add_subparsers(dest="action", required=True)
    for name, helptext in (("ls", "list the cached artifacts"),
                           ("verify", "check every artifact against its recorded checksum (exit 1 if any is broken)"),
                           ("rm", "remove artifacts by key prefix")):
        p = actions.add_parser(name, help=helptext)
        if name == "rm":
            p.add_argument("keys", nargs="+", help="key prefixes (≥ 6 hex digits), as `cache ls` prints them")
        p.add_argument("--cache-dir", type=Path, default=None,
                       help="the cache (default: $EBYD_CACHE_DIR or the user cache folder)")
        p.add_argument("--kind", default=None, help="only this kind: models, exposures, attack_parts, ...")
    cache.set_defaults(handler=cmd_cache)


def cmd_cache(args: argparse.Namespace) -> int:
    cache = ArtifactCache(args.cache_dir or default_cache_dir())
    if args.action == "rm":
        chosen = [find(cache, prefix, args.kind) for prefix in args.keys]  # all resolved before any removal
        for entry in chosen:
            remove(entry)
            print(f"removed {entry.kind}/{entry.key}")
        return 0
    found = entries(cache, args.kind)
    if args.action == "ls":
        for line in _listing(found):
            print(line)
        return 0
    broken = [(e, p) for e, p in ((e, e.problem()) for e in found) if p is not None]
    for entry, problem in broken:
        print(f"{entry.kind}/{entry.key[:12]}  {problem}")
    print(f"{len(found) - len(broken)} of {len(found)} artifacts in {cache.root} verified"
          + (f"; remove the broken ones with: ebyd-bench cache rm {' '.join(e.key[:12] for e, _ in broken)}"
             if broken else ""))
    return 1 if broken else 0


def _listing(found: list[CacheEntry]) -> Iterator[str]:
    total = 0
    for entry in found:
        total += entry.size
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.modified))
        yield f"{entry.kind:<13} {entry.key[:12]}  {entry.size / 2**20:7.1f} MB  {stamp}  {describe(entry)}"
    yield f"{len(found)} artifacts, {total / 2**20:.1f} MB"
