"""The planner: which stages a grid needs, and resume."""

from collections import Counter

from ebyd_bench.benchmark.grid.config import validate_config
from ebyd_bench.benchmark.grid.runner import RunOptions, StageRunner, build_domain
from ebyd_bench.benchmark.grid.runner import plan as plan_stages

RAW = {"dataset": {"name": "cifar10", "train_subset": 600, "test_subset": 200, "defense_size": 100},
       "model": {"name": "resnet18_narrow", "params": {"width": 8}}, "recipe": {"name": "tiny", "epochs": 1},
       "attacks": ["badnets", "blend"], "exposures": ["none", "cul", "cft"],
       "defenses": ["none", "rp", "ft", {"name": "rp", "lr": 0.05, "label": "RP-b"}]}


def plan_of(grid, opts, finished=frozenset()):
    return plan_stages(grid, StageRunner(grid, opts).keys, set(finished), opts.shard)


def plan(tmp_path, data_root, session_cache, cifar, finished=frozenset()):
    return plan_of(validate_config(RAW), RunOptions(tmp_path, session_cache, data_root), finished)


def test_stage_counts_and_exposure_independent_cells(tmp_path, data_root, session_cache, cifar):
    stages, skipped = plan(tmp_path, data_root, session_cache, cifar)
    kinds = Counter(s.kind for s in stages)
    # per attack: none/rp/rp-b × 3 exposures = 9 cells, ft once (it ignores the exposure)
    assert kinds == {"train": 2, "expose": 4, "cell": 2 * (3 * 3 + 1)} and skipped == 0
    labels = [s.label for s in stages if s.kind == "cell"]
    assert sum("× ft" in lbl for lbl in labels) == 2 and all("none × ft" in lbl for lbl in labels if "× ft" in lbl)
    assert sum("RP-b" in lbl for lbl in labels) == 6
    cells = [s for s in stages if s.kind == "cell"]
    assert all(cell.deps[0] in {s.key for s in stages if s.kind == "train"} for cell in cells)


def test_finished_cells_are_skipped_with_the_stages_only_they_needed(tmp_path, data_root, session_cache, cifar):
    stages, _ = plan(tmp_path, data_root, session_cache, cifar)
    blend_cells = {s.key for s in stages if s.kind == "cell" and s.label.startswith("blend")}
    rest, skipped = plan(tmp_path, data_root, session_cache, cifar, blend_cells)
    assert skipped == len(blend_cells)
    assert not any(s.label.startswith(("blend", "train blend", "expose blend")) for s in rest)


def test_defense_in_training_adds_clean_defense_data_to_victim_training(tmp_path, data_root, session_cache, cifar,
                                                                         monkeypatch):
    """The ablation trains on the poisoned split plus D_d, unpoisoned; by default D_d is held out."""
    import numpy as np

    import ebyd_bench.benchmark.domains.image as image

    seen = {}

    def capture(model, images, labels, *args, **kwargs):
        seen["images"], seen["labels"] = images, labels
        return model

    monkeypatch.setattr(image, "train_classifier", capture)
    for flag in (False, True):
        raw = {**RAW, "attacks": ["badnets"], "dataset": {**RAW["dataset"], "defense_in_training": flag}}
        grid = validate_config(raw)
        run = build_domain(grid, RunOptions(tmp_path, session_cache, data_root))
        spec = grid.attacks[0]
        _, info = run.train_poisoned(spec, 0)
        dd = run.defense_data(0)
        tail_is_dd = len(seen["labels"]) >= len(dd) and np.array_equal(seen["images"][-len(dd):], dd.images)
        assert info["train_size"] == len(seen["labels"]) == 600 + (len(dd) if flag else 0)
        assert tail_is_dd == flag
        assert ("D_d was also part of victim training" in " ".join(run.setting_notes(run.attack(spec, 0)))) == flag


def test_every_prefix_of_the_test_subset_is_a_uniform_sample(tmp_path, data_root, session_cache, cifar):
    """Traces and detection AUROCs read a prefix of the test subset; the ImageFolder tree is
    class-sorted, so a sorted subset would make that prefix a few classes only."""
    import numpy as np

    raw = {**RAW, "dataset": {**RAW["dataset"], "test_subset": 2000}}
    run = build_domain(validate_config(raw), RunOptions(tmp_path, session_cache, data_root))
    prefix = run.data.test.labels[run.test_idx[:200]]
    counts = np.bincount(prefix, minlength=10)
    assert counts.min() >= 8 and counts.max() <= 35  # ≈ 20 each; sorted order would give ~2 classes


def test_shards_split_the_models_and_everything_downstream_of_them(tmp_path, data_root, session_cache, cifar):
    """N shards plan disjoint sets of stages whose union is the whole grid; every model is in one."""
    cfg = validate_config({**RAW, "attacks": ["badnets", "blend", "wanet"], "seeds": [0, 1]})

    def shard(index, count):
        return plan_of(cfg, RunOptions(tmp_path, session_cache, data_root, shard=(index, count)))[0]

    whole = {s.key: s for s in shard(0, 1)}
    parts = [{s.key: s for s in shard(i, 4)} for i in range(4)]
    assert sum(len(p) for p in parts) == len(whole) and set().union(*parts) == set(whole)
    assert [sum(s.kind == "train" for s in p.values()) for p in parts] == [2, 2, 1, 1]  # 6 models over 4
    for part in parts:
        assert all(dep in part for s in part.values() for dep in s.deps)  # a shard needs no other shard's stage


def test_an_attack_with_its_own_seeds_adds_only_its_models(tmp_path, data_root, session_cache, cifar):
    cfg = validate_config({**RAW, "attacks": ["badnets", {"name": "none", "seeds": [0, 1, 2]}], "exposures": ["cul"],
                           "defenses": ["none"]})
    stages, _ = plan_of(cfg, RunOptions(tmp_path, session_cache, data_root))
    assert sorted(s.label for s in stages if s.kind == "train") == [
        "train badnets seed=0", "train none seed=0", "train none seed=1", "train none seed=2"]
    assert sum(s.kind == "cell" for s in stages) == 4
