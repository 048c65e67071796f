"""The victim zoo: `ebyd-bench cache export` / `cache import` move poisoned models, exposures and attack
parts between caches with their keys, metadata and checksums; a tampered archive imports nothing."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from ebyd_bench.benchmark.cache import ArtifactCache, stable_hash
from ebyd_bench.benchmark.cache_admin import MANIFEST, entries, key_problem
from ebyd_bench.cli import main

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
#: record fields that legitimately differ between a run that trained and one that reused the cache
RUN_FIELDS = {"provenance", "timings", "train_cached"}


# ------------------------------------------------------------------ helpers
def _model_config(attack: str = "adv", seed: int = 0) -> dict:
    return {"kind": "poisoned_model", "harness_version": 3, "seed": seed,
            "dataset": {"name": "cifar10", "digest": "d" * 64, "train_subset": 600, "defense_size": 100},
            "attack": {"name": attack, "version": 1, "params": {"poison_rate": 0.1}},
            "model": {"name": "resnet18_narrow", "params": {"width": 8}}, "recipe": {"epochs": 1, "lr": 1e-05}}


def _part(config: dict, seed: int, name: str = "adv_surrogate") -> dict:
    """An attack part as the image domain stores it (benchmark/grid/domain.py, part_cache)."""
    base = {"dataset": config["dataset"]["digest"], "train_subset": config["dataset"]["train_subset"],
            "defense_size": config["dataset"]["defense_size"], "seed": seed, "attack": config["attack"]["name"],
            "version": config["attack"]["version"], "model": config["model"]}
    return {"base": base, "name": name, "params": {"seed": 1234}}


def _synthetic_cache(root: Path) -> dict[str, str]:
    """A cache keyed exactly like a run's: two models, an exposure of the first, the first one's attack
    part and an unrelated part (another seed). Returns the keys by name."""
    cache = ArtifactCache(root)
    adv, blend = _model_config("adv"), _model_config("blend")
    keys = {"adv": stable_hash(adv), "blend": stable_hash(blend)}
    cache.save("models", keys["adv"], {"w": torch.arange(6.0)}, {"config": adv, "metrics": {"ca": 0.9, "asr": 1.0}})
    cache.save("models", keys["blend"], {"w": torch.zeros(6)}, {"config": blend, "metrics": {"ca": 0.8, "asr": 0.9}})
    exposure = {"kind": "exposure", "model": keys["adv"], "seed": 0,
                "exposure": {"name": "cul", "version": 1, "params": {"epochs": 2}}, "eval": {"test_idx": "e" * 64}}
    keys["exposure"] = stable_hash(exposure)
    cache.save("exposures", keys["exposure"], {"w": torch.ones(6)},
               {"config": exposure, "label": 0, "label_share": 0.9})
    for name, seed in (("part", 0), ("other_part", 1)):
        part = _part(adv, seed)
        keys[name] = stable_hash({"kind": "attack_part", **part})
        cache.save("attack_parts", keys[name], {"w": torch.full((3,), float(seed))}, part)
    return keys


def _snapshot(root: Path) -> list[tuple[str, str]]:
    """Every path under ``root`` with its content hash: what "nothing imported" is checked against."""
    if not root.exists():
        return []
    return sorted((str(p.relative_to(root)), hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
                  for p in root.rglob("*"))


def _rezip(src: Path, dst: Path, change) -> None:
    """Copy the zip ``src`` to ``dst`` with ``change(files)`` applied to {member: bytes}."""
    with zipfile.ZipFile(src) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    change(files)
    with zipfile.ZipFile(dst, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)


def _manifest(files: dict) -> dict:
    return json.loads(files[MANIFEST])


def _set_manifest_sha(files: dict, member: str) -> None:
    """Make the manifest agree with a changed member (a tamperer who also edits the manifest)."""
    manifest = _manifest(files)
    for entry in manifest["entries"]:
        for listed in entry["files"].values():
            if listed["path"] == member:
                listed["sha256"], listed["size"] = hashlib.sha256(files[member]).hexdigest(), len(files[member])
    files[MANIFEST] = json.dumps(manifest).encode()


def _member(kind: str, key: str, suffix: str) -> str:
    return f"{kind}/{key[:2]}/{key}{suffix}"


@pytest.fixture
def zoo(tmp_path, capsys) -> tuple[Path, dict[str, str]]:
    """A synthetic source cache exported in full: (archive, keys)."""
    keys = _synthetic_cache(tmp_path / "source")
    archive = tmp_path / "zoo.zip"
    assert main(["cache", "export", "--all", "--out", str(archive), "--cache-dir", str(tmp_path / "source")]) == 0
    capsys.readouterr()
    return archive, keys


# ------------------------------------------------------------------ the end-to-end promise
@pytest.mark.e2e  # runs a grid
def test_export_import_then_the_tiny_grid_trains_nothing_and_reproduces_the_metrics(
        tiny_grid, session_cache, seeded_cache, data_root, tmp_path, capsys):
    records = [json.loads(line) for line in (tiny_grid / "results.jsonl").read_text().splitlines()]
    prefixes = sorted({r["cache_key"][:12] for r in records} | {r["exposure_key"][:12] for r in records})
    archive = tmp_path / "victims.zip"
    assert main(["cache", "export", *prefixes, "--out", str(archive), "--cache-dir", str(session_cache)]) == 0
    assert "exported 4 artifacts (2 exposures, 2 models, 0 attack parts)" in capsys.readouterr().out

    assert [e.kind for e in entries(ArtifactCache(seeded_cache))] == ["datasets"]  # no artifact yet
    assert main(["cache", "import", str(archive), "--cache-dir", str(seeded_cache)]) == 0
    assert "4 artifacts imported, 0 already there" in capsys.readouterr().out
    imported = _snapshot(seeded_cache / "models") + _snapshot(seeded_cache / "exposures")

    out = tmp_path / "out"
    assert main(["run", str(TINY), "--out", str(out), "--cache-dir", str(seeded_cache),
                 "--data-root", str(data_root)]) == 0
    assert "0 poisoned models trained" in capsys.readouterr().out
    again = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(again) == len(records) and all(r["train_cached"] for r in again)
    log = (out / "run.log").read_text()
    assert log.count("cache hit") == 2
    # nothing was trained or exposed: the models and exposures are exactly the imported files
    assert _snapshot(seeded_cache / "models") + _snapshot(seeded_cache / "exposures") == imported
    first = {r["cell_key"]: {k: v for k, v in r.items() if k not in RUN_FIELDS} for r in records}
    assert {r["cell_key"]: {k: v for k, v in r.items() if k not in RUN_FIELDS} for r in again} == first

    # the same export with one flipped byte in a tensor file is refused into another empty cache
    data = bytearray(archive.read_bytes())
    tensors = ArtifactCache(session_cache).tensor_path("models", records[0]["cache_key"]).read_bytes()
    data[data.find(tensors) + len(tensors) // 2] ^= 0x01
    tampered, empty = tmp_path / "tampered.zip", tmp_path / "empty"
    tampered.write_bytes(bytes(data))
    assert main(["cache", "import", str(tampered), "--cache-dir", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: refusing to import") and "nothing imported" in err and err.count("\n") == 1
    assert not empty.exists()


@pytest.mark.e2e  # runs a grid
def test_an_attack_part_travels_with_its_model(run_yaml, seeded_cache, data_root, tmp_path, session_cache, capsys):
    """Adv's surrogate is exported with its model: a run on the importing machine trains neither."""
    grid = ("name: zoo-adv\ndataset: {name: cifar10, train_subset: 300, test_subset: 100, defense_size: 50}\n"
            "model: {name: resnet18_narrow, params: {width: 8}}\nrecipe: {name: tiny, epochs: 1, batch_size: 64}\n"
            "attacks: [{name: adv, surrogate_epochs: 1, pgd_steps: 1}]\nexposures: []\ndefenses: [none]\n"
            "seeds: [0]\ntrace_eval_size: 50\n")
    records, _ = run_yaml(grid)
    source = ArtifactCache(seeded_cache)
    assert [e.kind for e in entries(source, "attack_parts")] == ["attack_parts"]
    archive = tmp_path / "adv.zip"
    assert main(["cache", "export", records[0]["cache_key"][:12], "--out", str(archive),
                 "--cache-dir", str(seeded_cache)]) == 0
    assert "(0 exposures, 1 models, 1 attack parts)" in capsys.readouterr().out

    fresh = tmp_path / "fresh"
    shutil.copytree(session_cache / "datasets", fresh / "datasets")  # the decoded data, no artifact
    assert main(["cache", "import", str(archive), "--cache-dir", str(fresh)]) == 0
    parts = _snapshot(fresh / "attack_parts")
    config, out = tmp_path / "grid.yaml", tmp_path / "out2"
    assert main(["run", str(config), "--out", str(out), "--cache-dir", str(fresh), "--data-root", str(data_root)]) == 0
    assert "0 poisoned models trained" in capsys.readouterr().out
    assert _snapshot(fresh / "attack_parts") == parts  # the surrogate was not trained again
    again = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k not in RUN_FIELDS} for r in again] == \
           [{k: v for k, v in r.items() if k not in RUN_FIELDS} for r in records]


# ------------------------------------------------------------------ what an export holds
def test_the_archive_is_a_plain_zip_of_safetensors_and_json_with_a_manifest(zoo):
    archive, keys = zoo
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read(MANIFEST))
        assert manifest["format"] == "ebyd-bench-zoo" and manifest["version"] == 1
        assert [(e["kind"], e["key"]) for e in manifest["entries"]] == sorted(
            [("attack_parts", keys["part"]), ("attack_parts", keys["other_part"])]) + sorted(
            [("models", keys["adv"]), ("models", keys["blend"])]) + [("exposures", keys["exposure"])]
        for entry in manifest["entries"]:
            for listed in entry["files"].values():
                data = zf.read(listed["path"])
                assert hashlib.sha256(data).hexdigest() == listed["sha256"] and len(data) == listed["size"]
    assert names == {MANIFEST} | {e["files"][f]["path"] for e in manifest["entries"] for f in ("meta", "tensors")}
    assert all(n.endswith((".json", ".safetensors")) for n in names)


def test_an_exposure_brings_its_model_and_a_model_its_own_attack_parts(tmp_path, capsys):
    keys = _synthetic_cache(tmp_path / "source")
    archive = tmp_path / "zoo.zip"
    assert main(["cache", "export", keys["exposure"][:8], "--out", str(archive),
                 "--cache-dir", str(tmp_path / "source")]) == 0
    with zipfile.ZipFile(archive) as zf:
        listed = {(e["kind"], e["key"]) for e in json.loads(zf.read(MANIFEST))["entries"]}
    # the exposure, its model and that model's surrogate; not the other model, not the other seed's part
    assert listed == {("exposures", keys["exposure"]), ("models", keys["adv"]), ("attack_parts", keys["part"])}


@pytest.mark.parametrize("args,message", [
    (["--all", "--kind", "datasets"], "cannot export datasets"),
    ([], "give key prefixes or --all"),
    (["ffffff"], "no artifact with a key starting 'ffffff'"),
])
def test_export_refuses_what_a_zoo_cannot_hold(tmp_path, capsys, args, message):
    _synthetic_cache(tmp_path / "source")
    out = tmp_path / "zoo.zip"
    assert main(["cache", "export", *args, "--out", str(out), "--cache-dir", str(tmp_path / "source")]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_export_refuses_a_corrupted_entry_and_writes_no_archive(tmp_path, capsys):
    keys = _synthetic_cache(tmp_path / "source")
    cache = ArtifactCache(tmp_path / "source")
    path = cache.tensor_path("models", keys["blend"])
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    out = tmp_path / "zoo.zip"
    assert main(["cache", "export", "--all", "--out", str(out), "--cache-dir", str(tmp_path / "source")]) == 2
    assert f"cannot export models/{keys['blend'][:12]}: corrupted cache file" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".zoo.zip*"))


# ------------------------------------------------------------------ import: all or nothing
def test_import_into_an_empty_cache_then_again_skips_identical_entries(zoo, tmp_path, capsys):
    archive, keys = zoo
    dest = tmp_path / "dest"
    assert main(["cache", "import", str(archive), "--cache-dir", str(dest)]) == 0
    assert "5 artifacts imported, 0 already there" in capsys.readouterr().out
    source, copy = ArtifactCache(tmp_path / "source"), ArtifactCache(dest)
    for e in entries(source):
        assert copy.meta_path(e.kind, e.key).read_bytes() == source.meta_path(e.kind, e.key).read_bytes()
        assert torch.equal(copy.load(e.kind, e.key).tensors["w"], source.load(e.kind, e.key).tensors["w"])
    assert main(["cache", "verify", "--cache-dir", str(dest)]) == 0
    before = _snapshot(dest)
    assert main(["cache", "import", str(archive), "--cache-dir", str(dest)]) == 0
    assert "0 artifacts imported, 5 already there" in capsys.readouterr().out
    assert _snapshot(dest) == before


def test_import_refuses_an_entry_that_differs_from_the_cache_and_imports_nothing(zoo, tmp_path, capsys):
    archive, keys = zoo
    dest = ArtifactCache(tmp_path / "dest")
    config = _model_config("blend")  # same key, another model (say, trained elsewhere)
    dest.save("models", keys["blend"], {"w": torch.full((6,), 7.0)}, {"config": config, "metrics": {"ca": 0.1}})
    before = _snapshot(dest.root)
    assert main(["cache", "import", str(archive), "--cache-dir", str(dest.root)]) == 2
    err = capsys.readouterr().err
    assert f"models/{keys['blend'][:12]}: the cache already holds a different model" in err
    assert f"ebyd-bench cache rm {keys['blend'][:12]} --kind models" in err and err.count("\n") == 1
    assert _snapshot(dest.root) == before


def _flip_tensor_byte(files, keys):
    member = _member("exposures", keys["exposure"], ".safetensors")
    data = bytearray(files[member])
    data[-2] ^= 0xFF
    files[member] = bytes(data)


def _flip_tensor_byte_and_fix_manifest(files, keys):
    _flip_tensor_byte(files, keys)
    _set_manifest_sha(files, _member("exposures", keys["exposure"], ".safetensors"))


def _edit_meta(files, keys, fix_manifest=True):
    member = _member("exposures", keys["exposure"], ".json")
    meta = json.loads(files[member])
    meta["config"]["seed"] = 1  # no longer the exposure its key names (and the file keeps its size)
    files[member] = (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()
    if fix_manifest:
        _set_manifest_sha(files, member)


def _edit_part_meta(files, keys):
    member = _member("attack_parts", keys["part"], ".json")
    meta = json.loads(files[member])
    meta["params"]["seed"] = 99
    files[member] = json.dumps(meta).encode()
    _set_manifest_sha(files, member)


def _escape_path(files, keys):
    manifest = _manifest(files)
    manifest["entries"][0]["files"]["meta"]["path"] = "../../outside.json"
    files[MANIFEST] = json.dumps(manifest).encode()


def _drop_member(files, keys):
    del files[_member("models", keys["adv"], ".safetensors")]


def _bad_key(files, keys):
    manifest = _manifest(files)
    manifest["entries"][-1]["key"] = "../" + "0" * 61
    files[MANIFEST] = json.dumps(manifest).encode()


def _no_manifest(files, keys):
    del files[MANIFEST]


@pytest.mark.parametrize("tamper,message", [
    (_flip_tensor_byte, "its tensor file does not match its SHA-256"),
    (_flip_tensor_byte_and_fix_manifest, "differs from the one its metadata records"),
    (lambda f, k: _edit_meta(f, k, fix_manifest=False), "its metadata file does not match the manifest"),
    (_edit_meta, "its metadata's config does not hash to its key"),
    (_edit_part_meta, "base, name and params do not hash to its key"),
    (_escape_path, "not attack_parts/"),
    (_drop_member, "is missing from the archive"),
    (_bad_key, "64-hex key"),
    (_no_manifest, "it has no manifest.json"),
], ids=["tensor-byte", "tensor-byte-manifest-fixed", "meta-edited", "meta-edited-manifest-fixed",
        "part-meta-edited", "path-escape", "missing-file", "bad-key", "no-manifest"])
def test_a_tampered_archive_is_refused_with_exit_2_and_imports_nothing(zoo, tmp_path, capsys, tamper, message):
    archive, keys = zoo
    tampered = tmp_path / "tampered.zip"
    _rezip(archive, tampered, lambda files: tamper(files, keys))
    dest = tmp_path / "dest"
    ArtifactCache(dest).save("models", "ab" * 32, {"w": torch.zeros(1)}, {"note": "already here"})
    before = _snapshot(dest)
    assert main(["cache", "import", str(tampered), "--cache-dir", str(dest)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert _snapshot(dest) == before  # not one file, lock or folder more
    assert not (tmp_path / "outside.json").exists()


def test_a_damaged_zip_is_refused(zoo, tmp_path, capsys):
    archive, _ = zoo
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    assert main(["cache", "import", str(truncated), "--cache-dir", str(tmp_path / "dest")]) == 2
    assert "is not a readable zoo archive" in capsys.readouterr().err
    assert not (tmp_path / "dest").exists()


def test_key_problem_checks_what_each_kind_is_keyed_by():
    config = _model_config()
    key = stable_hash(config)
    assert key_problem("models", key, {"config": config}) is None
    assert "does not hash" in key_problem("models", key, {"config": {**config, "seed": 1}})
    assert "no exposure config" in key_problem("exposures", key, {"config": config})
    part = _part(config, 0)
    for kind in ("attack_part", "text_part"):
        assert key_problem("attack_parts", stable_hash({"kind": kind, **part}), part) is None
    assert "do not hash" in key_problem("attack_parts", stable_hash({"kind": "other", **part}), part)
    assert "names another key" in key_problem("models", key, {"config": config, "key": "0" * 64})
