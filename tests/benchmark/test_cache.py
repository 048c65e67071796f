"""Cache keys, atomic writes, corruption detection and the inter-process lock."""

import multiprocessing as mp
import time

import numpy as np
import pytest
import torch

from ebyd_bench.benchmark.cache import ArtifactCache, stable_hash
from ebyd_bench.benchmark.grid.config import ResolvedMethod, validate_config
from ebyd_bench.benchmark.specs import MethodSpec, build_method
from ebyd_bench.benchmark.errors import CacheError
from ebyd_bench.benchmark.registries import DEFENSES, EXPOSURES
from ebyd_bench.benchmark.grid.runner import RunOptions, StageRunner

RAW = {"dataset": {"name": "cifar10", "train_subset": 600, "test_subset": 200, "defense_size": 100},
       "model": {"name": "resnet18_narrow", "params": {"width": 8}},
       "recipe": {"name": "tiny", "epochs": 1}, "attacks": ["badnets"], "exposures": ["cul"],
       "defenses": ["none"]}


@pytest.fixture(scope="module")
def run_for(data_root, session_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")

    def make(raw):
        return StageRunner(validate_config(raw), RunOptions(out, session_cache, data_root))

    return make


def model_key(run_for, raw):
    run = run_for(raw)
    return run.keys.model(run.grid.attacks[0], 0)


@pytest.mark.parametrize("change", [
    {"attacks": [{"name": "badnets", "poison_rate": 0.2}]},
    {"attacks": [{"name": "badnets", "target": 3}]},
    {"attacks": ["blend"]},
    {"recipe": {"name": "tiny", "epochs": 2}},
    {"recipe": {"name": "tiny", "epochs": 1, "lr": 0.05}},
    {"model": {"name": "resnet18_narrow", "params": {"width": 12}}},
    {"model": {"name": "resnet18", "params": {"width": 8}}},
    {"dataset": {"name": "cifar10", "train_subset": 700, "test_subset": 200, "defense_size": 100}},
    {"dataset": {"name": "cifar10", "train_subset": 600, "test_subset": 200, "defense_size": 50}},
    {"dataset": {"name": "cifar10", "train_subset": 600, "test_subset": 200, "defense_size": 100,
                 "defense_in_training": True}},
    {"recipe": {"name": "tiny", "epochs": 1, "precision": "bf16"}},
    {"recipe": {"name": "tiny", "epochs": 1, "augmentation": "flip"}},
])
def test_every_determining_field_changes_the_model_key(run_for, change):
    assert model_key(run_for, RAW) != model_key(run_for, {**RAW, **change})


@pytest.mark.parametrize("change", [
    {"defenses": ["none", "rp"]},
    {"exposures": []},
    {"name": "another-grid"},
    {"dataset": {"name": "cifar10", "train_subset": 600, "test_subset": 300, "defense_size": 100}},
    {"trace_eval_size": 50},
    # later-added fields at their "as before" value keep keys of caches built before they existed
    {"recipe": {"name": "tiny", "epochs": 1, "precision": "fp32"}},
    {"dataset": {"name": "cifar10", "train_subset": 600, "test_subset": 200, "defense_size": 100,
                 "defense_in_training": False}},
    {"device": "cuda"},
])
def test_unrelated_fields_keep_the_model_key(run_for, change):
    assert model_key(run_for, RAW) == model_key(run_for, {**RAW, **change})


def test_a_trigger_file_enters_the_key_by_content_not_by_path(run_for, tmp_path):
    """The same smooth pattern in two places keys one model; a different pattern keys another."""
    def smooth_key(path):
        return model_key(run_for, {**RAW, "attacks": [{"name": "smooth", "trigger_file": str(path)}]})

    u = np.random.default_rng(0).uniform(0, 0.2, size=(1, 32, 32, 3)).astype(np.float32)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        np.save(tmp_path / folder / "u.npy", u)
    np.save(tmp_path / "other.npy", u * 0.5)
    assert smooth_key(tmp_path / "a" / "u.npy") == smooth_key(tmp_path / "b" / "u.npy")
    assert smooth_key(tmp_path / "a" / "u.npy") != smooth_key(tmp_path / "other.npy")


@pytest.mark.parametrize("kind,name,field,on", [
    ("exposure", "cul_text", "group_by_length", True), ("cell", "ft_text", "group_by_length", True),
    ("cell", "rp_text", "group_by_length", True), ("cell", "rp", "prune_bias", True),
    ("cell", "rp_text", "prune_bias", True), ("cell", "anp", "fraction", 0.1), ("cell", "strip", "decision_frr", 0.01)])
def test_later_method_fields_enter_keys_only_when_changed(run_for, kind, name, field, on):
    """A method parameter added later keeps old keys at its "as before" value."""
    run = run_for(RAW)

    def payload(**params):
        spec = MethodSpec(name=name, params=params)
        registry = EXPOSURES if kind == "exposure" else DEFENSES
        method = ResolvedMethod(spec, build_method(registry, spec, kind), kind)
        return (run.keys.exposure_payload("m" * 64, method, 0) if kind == "exposure"
                else run.keys.cell_payload("m" * 64, "e" * 64, method))

    method = (EXPOSURES if kind == "exposure" else DEFENSES).get(name)()
    assert field not in str(payload())  # the key of a cache built before the field existed
    assert stable_hash(payload()) == stable_hash(payload(**{field: getattr(method, field)}))
    assert stable_hash(payload()) != stable_hash(payload(**{field: on}))


def test_seed_and_data_digest_enter_the_key(run_for):
    run = run_for(RAW)
    payload = run.keys.model_payload(run.grid.attacks[0], 0)
    assert payload["dataset"]["digest"] == run.domain.data.digest
    assert stable_hash(payload) != stable_hash(run.keys.model_payload(run.grid.attacks[0], 1))


def test_save_load_roundtrip_and_corruption(tmp_path):
    cache = ArtifactCache(tmp_path)
    tensors = {"w": torch.arange(6.0).view(2, 3)}
    cache.save("models", "ab" * 32, tensors, {"note": "x"})
    art = cache.load("models", "ab" * 32)
    assert torch.equal(art.tensors["w"], tensors["w"]) and art.meta["note"] == "x"
    assert cache.load("models", "cd" * 32) is None
    path = cache.tensor_path("models", "ab" * 32)
    path.write_bytes(path.read_bytes()[:-3] + b"xyz")
    with pytest.raises(CacheError, match="corrupted"):
        cache.load("models", "ab" * 32)
    cache.meta_path("models", "ab" * 32).write_text("{not json")
    with pytest.raises(CacheError, match="corrupted cache metadata"):
        cache.load("models", "ab" * 32)


def test_no_temporary_files_are_left_behind(tmp_path):
    cache = ArtifactCache(tmp_path)
    cache.save("models", "ef" * 32, {"w": torch.zeros(2)}, {})
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def _compute_once(root: str, log_path: str) -> None:
    cache = ArtifactCache(root)
    with cache.lock("models", "12" * 32):
        if cache.load("models", "12" * 32) is None:
            with open(log_path, "a") as f:
                f.write("computed\n")
            time.sleep(0.5)
            cache.save("models", "12" * 32, {"w": torch.ones(1)}, {})


def test_concurrent_runners_compute_an_artifact_once(tmp_path):
    log_path = tmp_path / "log.txt"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_compute_once, args=(str(tmp_path / "c"), str(log_path))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert log_path.read_text().count("computed") == 1


def test_stable_hash_ignores_key_order():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 1.5})


def test_bf16_without_native_support_warns(run_for, monkeypatch, caplog):
    monkeypatch.setattr("ebyd_bench.benchmark.domains.image.native_bf16", lambda device: False)
    with caplog.at_level("WARNING", logger="ebyd_bench.benchmark.domains.image"):
        run_for({**RAW, "recipe": {"name": "tiny", "epochs": 1, "precision": "bf16"}})
    assert "precision bf16 on cpu" in caplog.text and "without native bf16" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="ebyd_bench.benchmark.domains.image"):
        run_for(RAW)
    assert "bf16" not in caplog.text


@pytest.mark.parametrize("native", [True, False])
def test_precision_auto_is_resolved_before_the_model_key(run_for, monkeypatch, native):
    """`precision: auto` keys (and trains) exactly like the precision it resolves to on this machine."""
    monkeypatch.setattr("ebyd_bench.benchmark.training.native_bf16", lambda device: native)
    auto = run_for({**RAW, "recipe": {"name": "tiny", "epochs": 1, "precision": "auto"}})
    assert auto.domain.recipe.precision == ("bf16" if native else "fp32")
    resolved = {**RAW, "recipe": {"name": "tiny", "epochs": 1, "precision": auto.domain.recipe.precision}}
    assert model_key(run_for, resolved) == auto.keys.model(auto.grid.attacks[0], 0)


@pytest.mark.parametrize("flags,native", [
    ("fpu sse2 avx2 fma", False),
    ("fpu avx2 avx512f avx512bw", False),       # AVX-512 alone still emulates bf16
    ("fpu avx2 avx512f avx512_bf16", True),
    ("fpu avx2 amx_bf16 amx_tile", True),
])
def test_native_bf16_reads_the_cpu_flags(flags, native):
    from ebyd_bench.benchmark.training import native_bf16

    assert native_bf16("cpu", cpuinfo=f"processor\t: 0\nflags\t\t: {flags}\n") is native


def _two_artifacts(root):
    cache = ArtifactCache(root)
    model = {"config": {"kind": "poisoned_model", "attack": {"name": "badnets"}, "model": {"name": "resnet18"},
                        "dataset": {"name": "cifar10"}, "seed": 0}, "metrics": {"ca": 0.9, "asr": 0.99}}
    cache.save("models", "ab" * 32, {"w": torch.zeros(3)}, model)
    cache.save("exposures", "abcdef" + "0" * 58, {"w": torch.ones(3)},
               {"config": {"kind": "exposure", "exposure": {"name": "cul"}, "model": "ab" * 32, "seed": 0},
                "label": 0, "label_share": 0.97})
    return cache


def test_cache_ls_names_every_artifact_and_its_parent_attack(tmp_path, capsys):
    from ebyd_bench.cli import main

    _two_artifacts(tmp_path)
    assert main(["cache", "ls", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "models        ababababab" in out and "cifar10 resnet18 badnets seed=0  CA 0.900, ASR 0.990" in out
    assert "cul of badnets model abababababab seed=0  label 0 (share 0.97)" in out
    assert out.strip().endswith("MB") and "2 artifacts" in out


def test_cache_verify_finds_corrupted_and_incomplete_artifacts_and_rm_removes_them(tmp_path, capsys):
    from ebyd_bench.cli import main

    cache = _two_artifacts(tmp_path)
    args = ["--cache-dir", str(tmp_path)]
    assert main(["cache", "verify", *args]) == 0
    cache.tensor_path("models", "ab" * 32).write_bytes(b"garbage")             # a corrupted file
    cache.tensor_path("models", "cd" * 32).parent.mkdir(parents=True)
    cache.tensor_path("models", "cd" * 32).write_bytes(b"half")                 # tensors, no metadata
    capsys.readouterr()
    assert main(["cache", "verify", *args]) == 1
    out = capsys.readouterr().out
    assert "models/abababababab  corrupted cache file" in out and "models/cdcdcdcdcdcd  incomplete" in out
    assert "1 of 3 artifacts" in out
    assert main(["cache", "rm", "abcd", *args]) == 2                            # too short: not a prefix
    assert main(["cache", "rm", "ababab", "cdcdcd", *args]) == 0
    assert main(["cache", "verify", *args]) == 0 and "1 of 1 artifacts" in capsys.readouterr().out
    assert cache.load("exposures", "abcdef" + "0" * 58) is not None               # the other one is untouched


def test_cache_rm_refuses_an_ambiguous_or_unknown_prefix_and_removes_nothing(tmp_path, capsys):
    from ebyd_bench.benchmark.cache_admin import entries
    from ebyd_bench.cli import main

    cache = _two_artifacts(tmp_path)
    cache.save("models", "abcdef" + "1" * 58, {"w": torch.zeros(1)}, {})
    args = ["--cache-dir", str(tmp_path)]
    assert main(["cache", "rm", "ababab", "ffffff", *args]) == 2                # the second is unknown
    assert "no artifact with a key starting 'ffffff'" in capsys.readouterr().err
    assert main(["cache", "rm", "abcdef", *args]) == 2                          # a model and an exposure
    assert "ambiguous (exposures/abcdef0000000000, models/abcdef1111111111)" in capsys.readouterr().err
    assert len(entries(cache)) == 3                                             # nothing was removed
    assert main(["cache", "rm", "abcdef", "--kind", "exposures", *args]) == 0
    assert [(e.kind, e.key[:7]) for e in entries(cache)] == [("models", "abababa"), ("models", "abcdef1")]
