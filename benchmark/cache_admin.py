"""Look after a shared artifact cache: list what it holds, verify it, remove entries, move victims.

    ebyd-bench cache ls     [--cache-dir DIR] [--kind KIND]
    ebyd-bench cache verify [--cache-dir DIR] [--kind KIND]
    ebyd-bench cache rm KEY_PREFIX [KEY_PREFIX ...] [--cache-dir DIR] [--kind KIND]
    ebyd-bench cache export KEY_PREFIX [KEY_PREFIX ...] --out FILE [--cache-dir DIR] [--kind KIND]
    ebyd-bench cache export --all --out FILE [--cache-dir DIR]
    ebyd-bench cache import FILE [--cache-dir DIR]

A poisoned model costs minutes to hours to train, so a cache is worth keeping healthy rather than
wiping: ``verify`` re-checks every tensor file against the SHA-256 its metadata recorded (and every
decoded dataset against its sidecar) and names the broken entries, and ``rm`` deletes just those (or
any others, by key prefix) under the same lock a runner takes, so a concurrent grid never reads half
of a removed artifact.

``export`` and ``import`` move a *victim zoo* between machines: poisoned models, exposures and the
attack parts the models were poisoned with (an adversarial surrogate, a trigger generator), so a lab
trains paper-scale victims once on a GPU and runs defenses anywhere. The archive is a plain zip of
the cache's own files (``<kind>/<key[:2]>/<key>.safetensors`` and ``.json``) plus ``manifest.json``,
which lists every entry with the SHA-256 and size of each file; nothing in it is ever unpickled.
``import`` checks the whole archive before writing anything: every file against the manifest, every
tensor file against its metadata, and every key against its metadata (a model's or exposure's key is
the hash of its ``config``; an attack part's the hash of its ``base``, ``name`` and ``params``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
import zipfile
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from ebyd_bench.benchmark.cache import (DATASETS_DIR, ArtifactCache, checksum_problem, checksum_sidecar,
                                        read_sidecar, rm_command, stable_hash)
from ebyd_bench.benchmark.errors import BenchmarkError, CacheError
from ebyd_bench.benchmark.io import atomic_write, cache_lock, default_cache_dir

_KEY = re.compile(r"^[0-9a-f]{64}$")
#: a decoded dataset's name in ``<root>/datasets/``: ``<dataset>-<16 hex digits>`` (+ .npz, .json)
_DATASET = re.compile(r"^([a-z][a-z0-9_]*)-([0-9a-f]{16})$")


@dataclass(frozen=True)
class CacheEntry:
    """One artifact: ``kind`` (models, exposures, attack_parts, ..., or datasets) and its ``key`` (64 hex
    digits; for a decoded dataset the file's stem, ``cifar10-<16 hex>``)."""

    kind: str
    key: str
    cache: ArtifactCache

    @property
    def is_dataset(self) -> bool:
        return self.kind == DATASETS_DIR

    @property
    def data_path(self) -> Path:
        """The decoded dataset's ``.npz`` (datasets only)."""
        return self.cache.root / DATASETS_DIR / f"{self.key}.npz"

    @property
    def short(self) -> str:
        """How listings name the entry, and a prefix that ``cache rm`` accepts."""
        return self.key if self.is_dataset else self.key[:12]

    @property
    def hex(self) -> str:
        """The hexadecimal part of the key (what a key prefix is matched against)."""
        return self.key.rpartition("-")[2]

    @property
    def files(self) -> list[Path]:
        """The entry's files that exist, the one that marks it complete (metadata, sidecar) first."""
        if self.is_dataset:
            paths = (checksum_sidecar(self.data_path), self.data_path)
        else:
            paths = (self.cache.meta_path(self.kind, self.key), self.cache.tensor_path(self.kind, self.key))
        return [p for p in paths if p.exists()]

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in self.files)

    @property
    def modified(self) -> float:
        return max((p.stat().st_mtime for p in self.files), default=0.0)

    def lock(self):
        """The lock a runner (or the dataset loader) takes on this entry."""
        return cache_lock(self.data_path) if self.is_dataset else self.cache.lock(self.kind, self.key)

    def meta(self) -> dict[str, Any] | None:
        """The metadata JSON (a dataset's checksum sidecar); None when absent or unreadable."""
        if self.is_dataset:
            return read_sidecar(self.data_path)
        try:
            meta = json.loads(self.cache.meta_path(self.kind, self.key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    def problem(self) -> str | None:
        """Why the entry cannot be used, or None when it verifies."""
        if self.is_dataset:
            problem = checksum_problem(self.data_path)
            return None if problem is None else f"decoded dataset {self.data_path}: {problem}; a run rebuilds it"
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
    if kind in (None, DATASETS_DIR):
        for path in (cache.root / DATASETS_DIR).glob("*"):
            if path.suffix in (".npz", ".json") and _DATASET.match(path.stem):
                found.add((DATASETS_DIR, path.stem))
    return [CacheEntry(k, key, cache) for k, key in sorted(found)]


def describe(entry: CacheEntry) -> str:
    """One line saying what the artifact is, read from its metadata."""
    meta = entry.meta()
    if meta is None:
        return "(no readable metadata)" if not entry.is_dataset else "(no readable checksum sidecar)"
    if entry.is_dataset:
        return f"{meta.get('dataset', entry.key.rpartition('-')[0])} decoded arrays of {meta.get('source', '?')}"
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
    """The single entry whose key starts with ``prefix`` (at least 6 hex digits; a decoded dataset
    also by its name, ``cifar10-<hex>``, or by the hex digits after the dash)."""
    if not re.fullmatch(r"(?:[a-z][a-z0-9_]*-)?[0-9a-f]{6,64}", prefix):
        raise BenchmarkError(f"'{prefix}' is not a key prefix: give at least 6 lowercase hex digits "
                             f"(the keys `ebyd-bench cache ls` prints)")
    matches = [e for e in entries(cache, kind)
               if e.key.startswith(prefix) or (e.is_dataset and e.hex.startswith(prefix))]
    if not matches:
        raise BenchmarkError(f"no artifact with a key starting '{prefix}' in {cache.root}")
    if len(matches) > 1:
        listed = ", ".join(f"{e.kind}/{e.key[:16]}" for e in matches)
        raise BenchmarkError(f"key prefix '{prefix}' is ambiguous ({listed}); give more digits or --kind")
    return matches[0]


def remove(entry: CacheEntry) -> None:
    """Delete the artifact under its lock: metadata (a dataset's sidecar) first, so no reader ever sees
    it complete but without tensors."""
    with entry.lock():
        for path in entry.files:  # metadata, then tensors
            path.unlink(missing_ok=True)


# ===================================================================== the victim zoo: export / import
#: what a zoo carries; decoded datasets stay behind (each machine decodes its own from its data root)
ZOO_KINDS = ("attack_parts", "models", "exposures")  # parents first: the order entries are imported in
ZOO_FORMAT, ZOO_VERSION, MANIFEST = "ebyd-bench-zoo", 1, "manifest.json"
#: the ``kind`` field a domain's ``part_cache`` keys attack parts under (benchmark/grid/domain.py); it is
#: not stored in the part's metadata, so an imported part's key is checked against each of them
PART_KEY_KINDS = ("attack_part", "text_part")
#: the ``config.kind`` a model's and an exposure's key payload carries (benchmark/grid/runner.py, Keys)
_CONFIG_KINDS = {"models": "poisoned_model", "exposures": "exposure"}
_MAX_JSON = 256 * 2**20  # a manifest or metadata file larger than this is not one the harness wrote
_BLOCK = 1 << 20


def key_problem(kind: str, key: str, meta: Any) -> str | None:
    """Why ``meta`` is not the metadata of the entry ``kind/key`` (its content does not hash to the key),
    or None. Models and exposures: ``stable_hash(meta["config"]) == key``; attack parts:
    ``stable_hash({"kind", "base", "name", "params"}) == key``."""
    if not isinstance(meta, dict):
        return "its metadata is not a JSON object"
    if meta.get("key", key) != key:
        return f"its metadata names another key ({str(meta.get('key'))[:12]})"
    if kind in _CONFIG_KINDS:
        config = meta.get("config")
        if not isinstance(config, dict) or config.get("kind") != _CONFIG_KINDS[kind]:
            return f"its metadata has no {_CONFIG_KINDS[kind]} config"
        if stable_hash(config) != key:
            return "its metadata's config does not hash to its key"
        return None
    if kind == "attack_parts":
        payload = {"base": meta.get("base"), "name": meta.get("name"), "params": meta.get("params")}
        if not any(stable_hash({"kind": k, **payload}) == key for k in PART_KEY_KINDS):
            return "its metadata's base, name and params do not hash to its key"
        return None
    return f"a zoo holds only {', '.join(ZOO_KINDS)}, not {kind}"


def _member(kind: str, key: str, suffix: str) -> str:
    """An entry's file inside the archive: the cache's own layout."""
    return f"{kind}/{key[:2]}/{key}{suffix}"


def _part_belongs_to(base: Any, config: dict[str, Any]) -> bool:
    """Whether an attack part's ``base`` is the one the model of ``config`` was poisoned with: the
    image domain keys its parts by data digest, subsets, seed, attack (name, version) and model; the
    text domain by the same without the attack."""
    if not isinstance(base, dict) or not isinstance(config.get("dataset"), dict):
        return False
    dataset = config["dataset"]
    same = {"dataset": dataset.get("digest"), "train_subset": dataset.get("train_subset"),
            "defense_size": dataset.get("defense_size"), "seed": config.get("seed"), "model": config.get("model")}
    if any(k not in base or base[k] != v for k, v in same.items()):
        return False
    if "attack" in base:
        attack = config.get("attack") or {}
        return base["attack"] == attack.get("name") and base.get("version") == attack.get("version")
    return base.get("version") == (config.get("text") or {}).get("version")


def zoo_selection(cache: ArtifactCache, prefixes: list[str], kind: str | None = None,
                  everything: bool = False) -> tuple[list[CacheEntry], list[str]]:
    """The entries to export, with what they depend on (an exposure's poisoned model, a model's attack
    parts), in import order; and notes on dependencies the cache lacks."""
    if kind is not None and kind not in ZOO_KINDS:
        raise BenchmarkError(f"cannot export {kind}: a zoo holds {', '.join(ZOO_KINDS)}"
                             + (" (each machine decodes its own datasets from its data root)"
                                if kind == DATASETS_DIR else ""))
    if everything:
        chosen = [e for e in entries(cache, kind) if e.kind in ZOO_KINDS]
        if not chosen:
            raise BenchmarkError(f"nothing to export: no {kind or 'models, exposures or attack parts'} in {cache.root}")
    else:
        chosen = [find(cache, prefix, kind) for prefix in prefixes]
        for entry in chosen:
            if entry.kind not in ZOO_KINDS:
                raise BenchmarkError(f"cannot export {entry.kind}/{entry.short}: a zoo holds {', '.join(ZOO_KINDS)}")
    selected = {(e.kind, e.key): e for e in chosen}
    notes: list[str] = []
    for entry in [e for e in chosen if e.kind == "exposures"]:
        parent = str(((entry.meta() or {}).get("config") or {}).get("model", ""))
        model = CacheEntry("models", parent, cache)
        if _KEY.match(parent) and model.files:
            selected.setdefault(("models", parent), model)
        else:
            notes.append(f"exposure {entry.short}: its poisoned model {parent[:12]} is not in the cache; "
                         f"exported without it")
    configs = [(e.meta() or {}).get("config") for k, e in selected.items() if k[0] == "models"]
    if configs and (cache.root / "attack_parts").is_dir():
        for part in entries(cache, "attack_parts"):
            base = (part.meta() or {}).get("base")
            if any(isinstance(c, dict) and _part_belongs_to(base, c) for c in configs):
                selected.setdefault((part.kind, part.key), part)
    order = {k: i for i, k in enumerate(ZOO_KINDS)}
    return sorted(selected.values(), key=lambda e: (order[e.kind], e.key)), notes


def export_zoo(cache: ArtifactCache, chosen: list[CacheEntry], out: Path) -> int:
    """Write ``chosen`` into the zip ``out`` (atomically) with its manifest; returns its size in bytes.
    Refuses (:class:`BenchmarkError`, nothing written) a broken entry or one whose key does not match."""
    out = Path(out)
    if out.is_dir():
        raise BenchmarkError(f"--out {out} is a folder; give the archive's file name (e.g. victims.zip)")
    for entry in chosen:  # all checked before the archive is started
        problem = entry.problem() or key_problem(entry.kind, entry.key, entry.meta())
        if problem:
            raise BenchmarkError(f"cannot export {entry.kind}/{entry.short}: {problem}")
    listed: list[dict[str, Any]] = []

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
            for entry in chosen:
                meta_bytes = cache.meta_path(entry.kind, entry.key).read_bytes()
                meta = json.loads(meta_bytes)
                problem = key_problem(entry.kind, entry.key, meta)
                if problem:  # replaced since it was checked
                    raise BenchmarkError(f"cannot export {entry.kind}/{entry.short}: {problem}")
                tensor_path = cache.tensor_path(entry.kind, entry.key)
                size = tensor_path.stat().st_size
                digest = hashlib.sha256()
                info = zipfile.ZipInfo(_member(entry.kind, entry.key, ".safetensors"), time.gmtime()[:6])
                with open(tensor_path, "rb") as src, zf.open(info, "w", force_zip64=size > 2**31) as dst:
                    for block in iter(lambda: src.read(_BLOCK), b""):
                        digest.update(block)
                        dst.write(block)
                if digest.hexdigest() != meta.get("tensor_sha256"):
                    raise BenchmarkError(f"cannot export {entry.kind}/{entry.short}: its tensor file changed "
                                         f"while it was being read; run `ebyd-bench cache verify`")
                zf.writestr(_member(entry.kind, entry.key, ".json"), meta_bytes, compress_type=zipfile.ZIP_DEFLATED)
                listed.append({"kind": entry.kind, "key": entry.key, "describe": describe(entry), "files": {
                    "tensors": {"path": info.filename, "sha256": digest.hexdigest(), "size": size},
                    "meta": {"path": _member(entry.kind, entry.key, ".json"),
                             "sha256": hashlib.sha256(meta_bytes).hexdigest(), "size": len(meta_bytes)}}})
            manifest = {"format": ZOO_FORMAT, "version": ZOO_VERSION,
                        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        "source": str(cache.root), "entries": listed}
            zf.writestr(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n",
                        compress_type=zipfile.ZIP_DEFLATED)

    try:
        atomic_write(out, write)
    except OSError as exc:
        raise BenchmarkError(f"cannot write {out}: {exc}") from None
    return out.stat().st_size


@dataclass
class _Incoming:
    """One entry of an archive, checked: its metadata bytes and what the manifest says of its tensors."""

    kind: str
    key: str
    meta_bytes: bytes
    meta: dict[str, Any]
    tensor_member: str
    tensor_sha256: str
    skip: bool = False  # already in the cache, identical

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.key[:12]}"


def _read_bounded(zf: zipfile.ZipFile, member: str, limit: int) -> bytes:
    info = zf.getinfo(member)
    if info.file_size > limit:
        raise ValueError(f"{member} is {info.file_size} bytes, more than any the harness writes")
    with zf.open(info) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{member} is larger than it says")
    return data


def _stream_sha256(zf: zipfile.ZipFile, member: str) -> str:
    digest = hashlib.sha256()
    with zf.open(member) as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_file(zf: zipfile.ZipFile, listed: Any, member: str, label: str) -> dict[str, Any]:
    if not isinstance(listed, dict) or listed.get("path") != member:
        where = listed.get("path") if isinstance(listed, dict) else listed
        raise ValueError(f"the manifest lists its {label} file at {where!r}, not {member}")
    if not isinstance(listed.get("sha256"), str) or not isinstance(listed.get("size"), int):
        raise ValueError(f"the manifest gives no SHA-256 and size for its {label} file")
    try:
        info = zf.getinfo(member)
    except KeyError:
        raise ValueError(f"its {label} file {member} is missing from the archive") from None
    if info.file_size != listed["size"]:
        raise ValueError(f"its {label} file is {info.file_size} bytes, the manifest says {listed['size']}")
    return listed


def _check_entry(zf: zipfile.ZipFile, cache: ArtifactCache, item: Any) -> _Incoming:
    """One manifest entry, checked against the archive, its key and the destination cache; raises
    ValueError naming the problem."""
    if not isinstance(item, dict) or item.get("kind") not in ZOO_KINDS or not _KEY.match(str(item.get("key"))):
        raise ValueError(f"not an entry of {', '.join(ZOO_KINDS)} with a 64-hex key: {str(item)[:80]}")
    kind, key = item["kind"], item["key"]
    files = item.get("files") if isinstance(item.get("files"), dict) else {}
    meta_file = _check_file(zf, files.get("meta"), _member(kind, key, ".json"), "metadata")
    tensor_file = _check_file(zf, files.get("tensors"), _member(kind, key, ".safetensors"), "tensor")
    meta_bytes = _read_bounded(zf, meta_file["path"], _MAX_JSON)
    if hashlib.sha256(meta_bytes).hexdigest() != meta_file["sha256"]:
        raise ValueError("its metadata file does not match the manifest's SHA-256")
    try:
        meta = json.loads(meta_bytes)
    except ValueError as exc:
        raise ValueError(f"its metadata is not JSON ({exc})") from None
    problem = key_problem(kind, key, meta)
    if problem:
        raise ValueError(problem)
    if meta.get("tensor_sha256") != tensor_file["sha256"]:
        raise ValueError("the manifest's SHA-256 of its tensor file differs from the one its metadata records")
    if _stream_sha256(zf, tensor_file["path"]) != tensor_file["sha256"]:
        raise ValueError("its tensor file does not match its SHA-256")
    incoming = _Incoming(kind, key, meta_bytes, meta, tensor_file["path"], tensor_file["sha256"])
    incoming.skip = _already_there(cache, incoming)
    return incoming


def _already_there(cache: ArtifactCache, incoming: _Incoming) -> bool:
    """True when the cache holds this entry identically; raises ValueError when it holds another one."""
    entry = CacheEntry(incoming.kind, incoming.key, cache)
    if not cache.exists(incoming.kind, incoming.key):
        return False  # absent, or tensors without metadata (an interrupted write): replaced
    problem = entry.problem()
    if problem:
        raise ValueError(f"the cache's copy is broken ({problem}); remove it first with "
                         f"`{rm_command(cache.root, [entry.short], entry.kind)}`")
    if entry.meta() != incoming.meta:
        raise ValueError(f"the cache already holds a different {incoming.kind[:-1].replace('_', ' ')} under "
                         f"this key; remove it first with `{rm_command(cache.root, [entry.short], entry.kind)}`")
    return True


def check_zoo(archive: Path, cache: ArtifactCache) -> list[_Incoming]:
    """Every entry of the archive, checked (checksums, keys, conflicts with ``cache``), in import order.
    Raises :class:`BenchmarkError` naming the first problem and counting the others; writes nothing."""
    archive = Path(archive)
    if not archive.is_file():
        raise BenchmarkError(f"no archive at {archive}")
    try:
        with zipfile.ZipFile(archive) as zf:
            manifest = json.loads(_read_bounded(zf, MANIFEST, _MAX_JSON))
            if (not isinstance(manifest, dict) or manifest.get("format") != ZOO_FORMAT
                    or not isinstance(manifest.get("entries"), list)):
                raise BenchmarkError(f"{archive} is not an ebyd-bench zoo: its {MANIFEST} has no {ZOO_FORMAT} entries")
            if manifest.get("version") != ZOO_VERSION:
                raise BenchmarkError(f"{archive} is a zoo of format version {manifest.get('version')}; this "
                                     f"ebyd-bench reads version {ZOO_VERSION}")
            checked, problems, seen = [], [], set()
            for item in manifest["entries"]:
                label = (f"{item.get('kind')}/{str(item.get('key'))[:12]}" if isinstance(item, dict) else "an entry")
                try:
                    incoming = _check_entry(zf, cache, item)
                    if (incoming.kind, incoming.key) in seen:
                        raise ValueError("listed twice")
                    seen.add((incoming.kind, incoming.key))
                    checked.append(incoming)
                except (ValueError, TypeError, KeyError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as exc:
                    problems.append(f"{label}: {exc}")
    except KeyError:
        raise BenchmarkError(f"{archive} is not an ebyd-bench zoo: it has no {MANIFEST}") from None
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as exc:
        raise BenchmarkError(f"{archive} is not a readable zoo archive: {exc}") from None
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise BenchmarkError(f"refusing to import {archive}, nothing imported: {problems[0]}{more}")
    order = {k: i for i, k in enumerate(ZOO_KINDS)}
    return sorted(checked, key=lambda e: (order[e.kind], e.key))


def import_zoo(archive: Path, cache: ArtifactCache) -> tuple[list[_Incoming], list[_Incoming]]:
    """Check the whole archive (:func:`check_zoo`), then write each new entry under its lock, tensors
    then metadata, each atomically (parents before children). Returns (imported, skipped)."""
    checked = check_zoo(archive, cache)
    imported, skipped = [], [e for e in checked if e.skip]
    with zipfile.ZipFile(archive) as zf:
        for incoming in (e for e in checked if not e.skip):
            with cache.lock(incoming.kind, incoming.key):
                try:
                    if _already_there(cache, incoming):  # written meanwhile by a concurrent run or import
                        skipped.append(incoming)
                        continue
                except ValueError as exc:
                    raise BenchmarkError(f"stopped importing {archive} at {incoming.name} ({len(imported)} "
                                         f"entries imported): {exc}") from None
                _write_tensors(zf, incoming, cache.tensor_path(incoming.kind, incoming.key))
                meta_bytes = incoming.meta_bytes
                atomic_write(cache.meta_path(incoming.kind, incoming.key), lambda tmp: tmp.write_bytes(meta_bytes))
                imported.append(incoming)
    return imported, skipped


def _write_tensors(zf: zipfile.ZipFile, incoming: _Incoming, path: Path) -> None:
    def write(tmp: Path) -> None:
        digest = hashlib.sha256()
        with zf.open(incoming.tensor_member) as src, open(tmp, "wb") as dst:
            for block in iter(lambda: src.read(_BLOCK), b""):
                digest.update(block)
                dst.write(block)
        if digest.hexdigest() != incoming.tensor_sha256:  # the archive changed since it was checked
            raise BenchmarkError(f"{incoming.name}: its tensor file no longer matches its SHA-256; nothing "
                                 f"written for it")

    atomic_write(path, write)


# ===================================================================== command line
def cmd_cache(args: argparse.Namespace) -> int:
    cache = ArtifactCache(args.cache_dir or default_cache_dir())
    if args.action == "rm":
        chosen = [find(cache, prefix, args.kind) for prefix in args.keys]  # all resolved before any removal
        for entry in chosen:
            remove(entry)
            print(f"removed {entry.kind}/{entry.key}")
        return 0
    if args.action == "export":
        return _cmd_export(cache, args)
    if args.action == "import":
        imported, skipped = import_zoo(args.archive, cache)
        for incoming in imported:
            print(f"imported {incoming.name}")
        for incoming in skipped:
            print(f"skipped  {incoming.name} (already in the cache)")
        print(f"{len(imported)} artifacts imported, {len(skipped)} already there, into {cache.root}")
        return 0
    found = entries(cache, args.kind)
    if args.action == "ls":
        for line in _listing(found):
            print(line)
        return 0
    broken = [(e, p) for e, p in ((e, e.problem()) for e in found) if p is not None]
    for entry, problem in broken:
        print(f"{entry.kind}/{entry.short}  {problem}")
    print(f"{len(found) - len(broken)} of {len(found)} artifacts in {cache.root} verified"
          + (f"; remove the broken ones with: {rm_command(cache.root, [e.short for e, _ in broken])}"
             if broken else ""))
    return 1 if broken else 0


def _cmd_export(cache: ArtifactCache, args: argparse.Namespace) -> int:
    if bool(args.keys) == bool(args.all):
        raise BenchmarkError("cache export: give key prefixes or --all (not both)")
    chosen, notes = zoo_selection(cache, args.keys, args.kind, args.all)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    size = export_zoo(cache, chosen, args.out)
    for entry in chosen:
        print(f"{entry.kind:<13} {entry.short}  {describe(entry)}")
    counts = ", ".join(f"{sum(e.kind == k for e in chosen)} {k.replace('_', ' ')}" for k in reversed(ZOO_KINDS))
    print(f"exported {len(chosen)} artifacts ({counts}), {size / 2**20:.1f} MB, to {args.out}")
    return 0


def _listing(found: list[CacheEntry]) -> Iterator[str]:
    total = 0
    for entry in found:
        total += entry.size
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.modified))
        yield f"{entry.kind:<13} {entry.short}  {entry.size / 2**20:7.1f} MB  {stamp}  {describe(entry)}"
    yield f"{len(found)} artifacts, {total / 2**20:.1f} MB"
