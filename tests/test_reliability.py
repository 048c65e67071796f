"""Reliability (issue 21): bad input is refused before anything is written, no path escapes ``--out``,
the result store survives a torn last line, ``compare`` keeps its exit code through a closed pipe and
reports the run's own wall-clock, a diverging model fails its stage, and tables mark degenerate defenses."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from ebyd_bench.cli import main

REPO = Path(__file__).resolve().parent.parent
MEASURED = REPO / "results" / "measured" / "quick-2core-avx2"

BASE = """\
name: tiny
dataset: {name: cifar10, train_subset: 600, test_subset: 200, defense_size: 100}
model: {name: resnet18_narrow, params: {width: 8}}
recipe: {name: tiny, epochs: 1, schedule: onecycle, batch_size: 64}
attacks: [badnets]
defenses: [none, {name: rp, epochs: 1}]
seeds: [0]
"""


def _named(name: str) -> str:
    """BASE with another first line (``name: ...``)."""
    return f"name: {name}\n" + BASE.split("\n", 1)[1]


def _with(old: str, new: str, text: str = BASE) -> str:
    assert old in text
    return text.replace(old, new)


@dataclass
class Bad:
    """A bad input: the config (text, bytes or None for the default), extra options (``{tmp}``, ``{out}``
    and ``{cache}`` filled in), what the error line must contain, and files to create first."""

    config: str | bytes | None
    needle: str
    args: list[str] = field(default_factory=list)
    setup: Callable[[Path], None] | None = None
    config_path: str = "grid.yaml"
    xfail: str = ""  # why this case is not refused yet (a file another change owns)


def _file(name: str, content: bytes = b"x") -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).write_bytes(content)


def _folder(name: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).mkdir()


BAD = {
    # ---- from issue 21 (those in this change's scope)
    "epochs-true": Bad(_with("epochs: 1", "epochs: true"), "boolean true"),
    "lr-inf": Bad(_with("recipe: {name: tiny,", "recipe: {name: tiny, lr: .inf,"), "finite"),
    "duplicate-key": Bad(BASE + "seeds: [1]\n", "duplicate key 'seeds'"),
    "escaping-name-multi-document": Bad(BASE + "---\n" + _named("../../escaped_a"),
                                        "not a safe folder name"),
    "binary-config": Bad(bytes(range(256)) * 8, "binary file"),
    "directory-config": Bad(None, "is a folder", setup=_folder("confdir"), config_path="confdir"),
    "latin1-config": Bad(("# réglage rapide\n" + BASE).encode("latin-1"), "not UTF-8"),
    "out-is-a-file": Bad(BASE, "is not a folder", ["--out", "{tmp}/taken"], _file("taken")),
    "cache-dir-is-a-file": Bad(BASE, "is not a folder", ["--cache-dir", "{tmp}/taken"], _file("taken")),
    # ---- more of our own
    "lr-nan": Bad(_with("recipe: {name: tiny,", "recipe: {name: tiny, lr: .nan,"), "finite"),
    "lr-minus-inf": Bad(_with("recipe: {name: tiny,", "recipe: {name: tiny, lr: -.inf,"), "finite"),
    "lr-true": Bad(_with("recipe: {name: tiny,", "recipe: {name: tiny, lr: true,"), "boolean true"),
    "momentum-nan": Bad(_with("recipe: {name: tiny,", "recipe: {name: tiny, momentum: .nan,"), "finite"),
    "weight-decay-inf": Bad(_with("recipe: {name: tiny,", "recipe: {name: tiny, weight_decay: .inf,"), "finite"),
    "batch-size-false": Bad(_with("batch_size: 64", "batch_size: false"), "boolean false"),
    "epochs-fraction": Bad(_with("epochs: 1", "epochs: 1.5"), "fractional part"),
    "rp-epochs-true": Bad(_with("{name: rp, epochs: 1}", "{name: rp, epochs: true}"), "boolean true"),
    "rp-lr-inf": Bad(_with("{name: rp, epochs: 1}", "{name: rp, lr: .inf}"), "finite"),
    "rp-momentum-nan": Bad(_with("{name: rp, epochs: 1}", "{name: rp, momentum: .nan}"), "finite"),
    "rp-select-holdout-true": Bad(_with("{name: rp, epochs: 1}", "{name: rp, select_holdout: true}"), "boolean"),
    "duplicate-nested-key": Bad(_with("{name: rp, epochs: 1}", "{name: rp, epochs: 1, epochs: 2}"),
                                "duplicate key 'epochs'"),
    "duplicate-key-second-document": Bad(BASE + "---\n" + _named("other\nname: again"),
                                         "duplicate key 'name'"),
    "name-with-slash": Bad(_named("a/b"), "not a safe folder name"),
    "name-absolute": Bad(_named("/tmp/elsewhere"), "not a safe folder name"),
    "name-dotdot": Bad(_named("'..'"), "not a safe folder name"),
    "name-hidden": Bad(_named(".hidden"), "not a safe folder name"),
    "name-backslash": Bad(_named("'a\\b'"), "not a safe folder name"),
    "name-space": Bad(_named("my grid"), "not a safe folder name"),
    "name-too-long": Bad(_named("a" * 101), "not a safe folder name"),
    "set-escaping-name": Bad(BASE, "not a safe folder name", ["--set", "name=../../escaped_b"]),
    "set-epochs-true": Bad(BASE, "boolean true", ["--set", "recipe.epochs=true"]),
    "set-lr-inf": Bad(BASE, "finite", ["--set", "recipe.lr=.inf"]),
    "set-duplicate-key": Bad(BASE, "duplicate key 'epochs'", ["--set", "recipe={{epochs: 1, epochs: 2}}"]),
    "utf16-config": Bad(BASE.encode("utf-16"), "binary file"),
    "nul-byte-config": Bad(BASE.encode() + b"\0\n", "binary file"),
    "latin1-second-document": Bad((BASE + "---\n# café\n" + _named("b")).encode("latin-1"),
                                  "line 9: not UTF-8"),
    "yaml-tab": Bad(BASE + "\tseeds: [0]\n", "not valid YAML: line 8"),
    "empty-config": Bad("", "expected a mapping"),
    "out-under-a-file": Bad(BASE, "cannot be created", ["--out", "{tmp}/taken/out"], _file("taken")),
    "cache-dir-under-a-file": Bad(BASE, "cannot be created", ["--cache-dir", "{tmp}/taken/cache"], _file("taken")),
}


TEXT_BASE = """\
name: tiny-text
dataset: {name: sst2, train_subset: 200, test_subset: 50, defense_size: 50}
model: {name: minilm-l6, params: {max_length: 32}}
recipe: {name: tiny, epochs: 1}
attacks: [badnet_rw]
defenses: [none]
seeds: [0]
"""

BAD.update({
    # ---- from issue 21: ranges of method parameters, targets, seeds, defense_size
    "rp-threshold-5": Bad(_with("{name: rp, epochs: 1}", "{name: rp, selection: threshold, threshold: 5}"),
                          "parameter 'threshold': Input should be less than 1"),
    "rp-alpha-negative": Bad(_with("{name: rp, epochs: 1}", "{name: rp, alpha: -1}"),
                             "parameter 'alpha': Input should be greater than 0"),
    "rp-thresholds-empty": Bad(_with("{name: rp, epochs: 1}", "{name: rp, thresholds: []}"),
                               "parameter 'thresholds': Tuple should have at least 1 item"),
    "cul-ca-min-5": Bad(_with("seeds: [0]", "exposures: [{name: cul, ca_min: 5}]\nseeds: [0]"),
                        "parameter 'ca_min': Input should be less than or equal to 1"),
    "blend-alpha-2": Bad(_with("attacks: [badnets]", "attacks: [{name: blend, alpha: 2}]"),
                         "parameter 'alpha': Input should be less than or equal to 1"),
    "wanet-s-negative": Bad(_with("attacks: [badnets]", "attacks: [{name: wanet, s: -1}]"), "parameter 's'"),
    "seed-too-large": Bad(_with("seeds: [0]", "seeds: [99999999999]"), "seeds: 99999999999 is outside 0..4294967295"),
    "seed-negative": Bad(_with("seeds: [0]", "seeds: [-1]"), "seeds: -1 is outside 0..4294967295"),
    "target-10-of-10-classes": Bad(_with("attacks: [badnets]", "attacks: [{name: badnets, target: 10}]"),
                                   "parameter 'target': 10 is not a class of dataset 'cifar10' (0..9)"),
    "defense-size-60000": Bad(_with("defense_size: 100", "defense_size: 60000"),
                              "dataset.defense_size: 60000 leaves no training data"),
    # ---- more of our own
    "attack-seed-too-large": Bad(_with("attacks: [badnets]", "attacks: [{name: badnets, seeds: [0, 4294967296]}]"),
                                 "seeds: 4294967296 is outside"),
    "set-seed-negative": Bad(BASE, "seeds: -5 is outside", ["--set", "seeds=[-5]"]),
    "target-negative": Bad(_with("attacks: [badnets]", "attacks: [{name: badnets, target: -1}]"),
                           "parameter 'target': Input should be greater than or equal to 0"),
    "target-true": Bad(_with("attacks: [badnets]", "attacks: [{name: badnets, target: true}]"), "boolean true"),
    "lwp-combination-over-triggers": Bad(_with("attacks: [badnet_rw]", "attacks: [{name: lwp, combination: 5}]",
                                               TEXT_BASE), "5 is more than the 4 triggers"),
    "lwp-empty-trigger": Bad(_with("attacks: [badnet_rw]", "attacks: [{name: lwp, triggers: [cf, '']}]",
                                   TEXT_BASE), "parameter 'triggers'"),
    "text-target-4-of-2-classes": Bad(_with("attacks: [badnet_rw]", "attacks: [{name: badnet_rw, target: 4}]",
                                            TEXT_BASE), "4 is not a class of dataset 'sst2' (0..1)"),
    "defense-size-50000": Bad(_with("defense_size: 100", "defense_size: 50000"), "has 50000 training samples"),
    "rp-thresholds-one": Bad(_with("{name: rp, epochs: 1}", "{name: rp, thresholds: [0.2, 1.0]}"),
                             "parameter 'thresholds'"),
    "badnet-rw-no-triggers": Bad(_with("attacks: [badnet_rw]", "attacks: [{name: badnet_rw, triggers: []}]",
                                       TEXT_BASE), "parameter 'triggers'"),
    "badnet-rw-empty-trigger": Bad(_with("attacks: [badnet_rw]", "attacks: [{name: badnet_rw, triggers: ['']}]",
                                         TEXT_BASE), "parameter 'triggers'"),
    "onion-bar-inf": Bad(_with("attacks: [badnet_rw]\ndefenses: [none]", "attacks: [badnet_rw]\n"
                               "defenses: [{name: onion, lm: ngram, bar: .inf}]", TEXT_BASE), "finite"),
    "strip-frr-one": Bad(_with("{name: rp, epochs: 1}", "{name: strip, decision_frr: 1}"), "parameter 'decision_frr'"),
    "nc-cost-multiplier-one": Bad(_with("{name: rp, epochs: 1}", "{name: nc, cost_multiplier: 1}"),
                                  "parameter 'cost_multiplier': Input should be greater than 1"),
    "model-width-0": Bad(_with("width: 8", "width: 0"), "parameter 'width'"),
    "model-unknown-parameter": Bad(_with("width: 8", "width: 8, depth: 3"), "depth"),
    "poison-rate-zero": Bad(_with("attacks: [badnets]", "attacks: [{name: badnets, poison_rate: 0}]"),
                            "parameter 'poison_rate'"),
})


def _bounds_of(hint: Any) -> tuple[Any, list[Any]]:
    """(base type, annotated-types constraints) of a field's annotation, through ``X | None``."""
    import typing

    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    if typing.get_origin(hint) is not typing.Annotated:
        return hint, []
    base, *metadata = typing.get_args(hint)
    return base, [c for m in metadata for c in getattr(m, "metadata", [m])]


def _outside(hint: Any) -> list[tuple[str, Any]]:
    """(what, value) pairs just outside what ``hint`` allows: each finite bound crossed, an empty
    non-empty tuple, a tuple holding one bad element."""
    import typing

    base, constraints = _bounds_of(hint)
    out = []
    for c in constraints:
        for attr, shift, what in (("gt", 0, "at-lower"), ("ge", -1, "below"), ("lt", 0, "at-upper"),
                                  ("le", 1, "above"), ("min_length", None, "empty")):
            bound = getattr(c, attr, None)
            if bound is not None:
                out.append((what, [] if shift is None else bound + shift))
    if typing.get_origin(base) is tuple:
        for what, value in _outside(typing.get_args(base)[0]):
            out.append((f"element-{what}", [value]))
    return out


def _generated_cases() -> dict[str, Bad]:
    """Every ranged numeric parameter of every registered method and recipe, just outside its range."""
    import dataclasses
    import typing

    from ebyd_bench.benchmark.registries import ATTACKS, DEFENSES, DOMAINS, EXPOSURES

    cases = {}
    targets = []
    for kind, registry in (("attacks", ATTACKS), ("exposures", EXPOSURES), ("defenses", DEFENSES)):
        targets += [(kind, name, registry.get(name)) for name in registry.names() if name != "none"]
    targets += [("recipe", domain, DOMAINS.get(domain).recipe_type) for domain in ("image", "text")]
    for kind, name, cls in targets:
        hints = typing.get_type_hints(cls, include_extras=True)
        text = getattr(cls, "domain", "image") == "text" or (kind == "recipe" and name == "text")
        base = TEXT_BASE if text else BASE
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            for what, value in _outside(hints[f.name]):
                setting, args = f"{f.name}: {json.dumps(value)}", []
                if kind == "recipe":
                    config, args = base, ["--set", f"recipe.{f.name}={json.dumps(value)}"]
                elif kind == "attacks":
                    first = "attacks: [badnet_rw]" if text else "attacks: [badnets]"
                    config = _with(first, f"attacks: [{{name: {name}, {setting}}}]", base)
                else:
                    config = _with("seeds: [0]", f"{kind}: [{{name: {name}, {setting}}}]\nseeds: [0]", base)
                    if kind == "defenses":
                        config = _with("defenses: [none, {name: rp, epochs: 1}]\n", "", config) if not text \
                            else _with("defenses: [none]\n", "", config)
                cases[f"range-{kind}-{name}-{f.name}-{what}"] = Bad(config, f"parameter '{f.name}'", args)
    return cases


BAD.update(_generated_cases())


def _listing(root: Path, recursive: bool = True) -> list[tuple[str, bool, int, int]]:
    """(relative path, is a folder, size, mtime in ns) of everything under ``root`` (empty if absent)."""
    if not root.exists():
        return []
    paths = root.rglob("*") if recursive else root.iterdir()
    return sorted((str(p.relative_to(root)), p.is_dir(), p.stat().st_size if p.is_file() else 0,
                   p.stat().st_mtime_ns) for p in paths)


@pytest.mark.parametrize("case", [pytest.param(c, id=k, marks=[pytest.mark.xfail(reason=c.xfail, strict=True)]
                                              if c.xfail else []) for k, c in BAD.items()])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case: Bad, tmp_path: Path, capsys) -> None:
    work = tmp_path / "work"  # the parent of --out and --cache-dir
    work.mkdir()
    if case.setup is not None:
        case.setup(work)
    config = work / case.config_path
    if case.config is not None:
        config.write_bytes(case.config.encode() if isinstance(case.config, str) else case.config)
    out, cache = work / "out", work / "cache"
    fill = {"tmp": str(work), "out": str(out), "cache": str(cache)}
    extra = [a.format(**fill) for a in case.args]
    args = ["run", str(config), "--out", str(out), "--cache-dir", str(cache), "--data-root", str(work / "no-data"),
            "--device", "cpu"]
    args = [*args, *extra]  # a later --out / --cache-dir wins
    before = (_listing(work), _listing(tmp_path, recursive=False), _listing(tmp_path.parent, recursive=False))
    capsys.readouterr()

    code = main(args)

    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert case.needle in lines[0], lines[0]
    after = (_listing(work), _listing(tmp_path, recursive=False), _listing(tmp_path.parent, recursive=False))
    assert after == before, "something was written"
    assert not out.exists() and not cache.exists() or case.setup is not None


def test_at_least_fifteen_cases_of_our_own() -> None:
    assert len(BAD) - 9 >= 15


#: numeric parameters still typed as a plain int or float; anything unranged fails the test below
NOT_YET_RANGED: set[tuple[str, str]] = set()


def test_every_numeric_parameter_has_a_range() -> None:
    import dataclasses
    import typing

    from ebyd_bench.benchmark.registries import ATTACKS, DEFENSES, DOMAINS, EXPOSURES

    owners = [(name, registry.get(name)) for registry in (ATTACKS, EXPOSURES, DEFENSES) for name in registry.names()]
    owners += [(f"recipe:{d}", DOMAINS.get(d).recipe_type) for d in ("image", "text")]
    unranged = set()
    for name, cls in owners:
        hints = typing.get_type_hints(cls, include_extras=True)
        for f in dataclasses.fields(cls):
            base, constraints = _bounds_of(hints[f.name])
            element = typing.get_args(base)[0] if typing.get_origin(base) is tuple else base
            if f.init and not constraints and (element in (int, float)):
                unranged.add((name, f.name))
    assert unranged <= NOT_YET_RANGED, sorted(unranged - NOT_YET_RANGED)


def test_every_ranged_parameter_has_an_out_of_range_case() -> None:
    generated = [k for k in BAD if k.startswith("range-")]
    assert len(generated) >= 100, len(generated)
    for needle in ("range-defenses-rp-threshold-at-upper", "range-defenses-rp-thresholds-empty",
                   "range-exposures-cul-ca_min-above", "range-attacks-blend-alpha-above",
                   "range-recipe-image-lr-at-lower", "range-recipe-text-warmup_fraction-above"):
        assert needle in BAD, needle


# ------------------------------------------------------------------ validation types
def test_numeric_types_refuse_bools_and_non_finite_floats() -> None:
    from pydantic import TypeAdapter, ValidationError

    from ebyd_bench.benchmark.params import Count, NonNegativeFloat, NonNegativeInt, PositiveFloat, Probability

    for hint, bad, good in ((Count, [True, False, 0, 1.5], [1, 3, 2.0]), (NonNegativeInt, [True, -1], [0, 5]),
                            (PositiveFloat, [True, 0, math.inf, math.nan, "inf"], [1e-3, 2]),
                            (NonNegativeFloat, [False, -1e-9, -math.inf, math.nan], [0, 0.5]),
                            (Probability, [True, -0.1, 1.01, math.nan, math.inf], [0, 0.5, 1])):
        adapter = TypeAdapter(hint)
        for value in bad:
            with pytest.raises(ValidationError):
                adapter.validate_python(value, strict=False)
        for value in good:
            adapter.validate_python(value, strict=False)


def test_recipes_built_in_python_are_checked_too() -> None:
    from ebyd_bench.benchmark.training import TrainRecipe

    for bad in ({"epochs": True}, {"lr": math.inf}, {"lr": math.nan}, {"momentum": -math.inf}):
        with pytest.raises(ValueError):
            TrainRecipe(**bad)
    assert TrainRecipe(epochs=2, lr=0.5).epochs == 2


def test_ls_still_shows_the_ranges(capsys) -> None:
    assert main(["ls", "defenses", "rp"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}
    assert rows["epochs"][:4] == ["epochs", "int", "≥", "1"] and rows["lr"][:4] == ["lr", "float", ">", "0"]


# ------------------------------------------------------------------ YAML and names
def test_yaml_merge_keys_may_still_be_overridden(tmp_path: Path) -> None:
    from ebyd_bench.benchmark.grid.config import load_configs

    cfg = tmp_path / "grid.yaml"
    cfg.write_text(_with("recipe: {name: tiny, epochs: 1, schedule: onecycle, batch_size: 64}",
                         "recipe:\n  <<: {name: tiny, epochs: 3, schedule: onecycle, batch_size: 64}\n  epochs: 1"))
    (grid,) = load_configs(cfg)
    assert grid.recipe.epochs == 1


def test_duplicate_key_error_names_key_and_lines(tmp_path: Path) -> None:
    from ebyd_bench.benchmark.errors import ConfigError
    from ebyd_bench.benchmark.grid.config import load_configs

    cfg = tmp_path / "grid.yaml"
    cfg.write_text(BASE + "attacks: [blend]\n")
    with pytest.raises(ConfigError) as exc:
        load_configs(cfg)
    message = str(exc.value)
    assert "duplicate key 'attacks'" in message and "line 8" in message and "line 5" in message
    assert "\n" not in message


def test_safe_grid_names_are_accepted(tmp_path: Path) -> None:
    from ebyd_bench.benchmark.grid.config import load_configs

    cfg = tmp_path / "grid.yaml"
    cfg.write_text(BASE + "---\n" + _named("Quick_cifar10.v2-b"))
    assert [g.name for g in load_configs(cfg)] == ["tiny", "Quick_cifar10.v2-b"]


def test_every_shipped_config_still_loads() -> None:
    from ebyd_bench.benchmark.grid.config import load_configs

    for path in sorted((REPO / "configs").glob("*.yaml")) + [REPO / "tests" / "configs" / "tiny.yaml"]:
        assert load_configs(path), path


# ------------------------------------------------------------------ the result store
def _measured_records(n: int) -> list[dict]:
    lines = (MEASURED / "results.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines[:n]]


def test_a_torn_last_line_is_set_aside_and_its_cell_runs_again(tmp_path: Path, caplog) -> None:
    from ebyd_bench.results.store import TORN_FILE, ResultStore, load_records

    first, second, third = _measured_records(3)
    store = ResultStore(tmp_path)
    store.append(first)
    line = json.dumps(second, sort_keys=True)
    with open(store.path, "a") as f:  # a crash in the middle of appending `second`
        f.write(line[: len(line) // 2])

    with caplog.at_level(logging.WARNING):
        assert ResultStore(tmp_path).finished_cells() == {first["cell_key"]}  # `second` runs again
    assert "torn last line" in caplog.text

    rerun = ResultStore(tmp_path)  # the rerun's store appends the cell again, then the next one
    with caplog.at_level(logging.WARNING):
        caplog.clear()
        rerun.append(second)
        rerun.append(third)
    assert [r.cell_key for r in load_records(tmp_path)] == [first["cell_key"], second["cell_key"], third["cell_key"]]
    assert caplog.text.count("set aside 1 torn line") == 1
    assert store.path.read_text().endswith("\n") and all(json.loads(x) for x in store.path.read_text().splitlines())
    assert (tmp_path / TORN_FILE).read_text() == line[: len(line) // 2] + "\n"

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert len(ResultStore(tmp_path).finished_cells()) == 3
    assert caplog.text == ""  # no warning on every later read
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.jsonl", "results.jsonl.lock", TORN_FILE]


def test_a_record_appended_onto_a_fragment_by_an_older_version_is_recovered(tmp_path: Path) -> None:
    from ebyd_bench.results.store import ResultStore, load_records

    first, second, third = _measured_records(3)
    garbage = json.dumps(second, sort_keys=True)[:150]
    (tmp_path / "results.jsonl").write_text(json.dumps(first) + "\n" + garbage + json.dumps(third) + "\n")
    assert [r.cell_key for r in load_records(tmp_path)] == [first["cell_key"], third["cell_key"]]
    assert ResultStore(tmp_path).repair() == 1
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 2
    assert ResultStore(tmp_path).repair() == 0


@pytest.mark.e2e
def test_a_torn_store_resumes_with_one_rerun(tiny_grid_copy: Path, data_root: Path, session_cache: Path,
                                             tiny_config_path: Path, capsys) -> None:
    store = tiny_grid_copy / "results.jsonl"
    lines = store.read_text().splitlines()
    torn = lines[-1][: len(lines[-1]) // 2]
    store.write_text("".join(x + "\n" for x in lines[:-1]) + torn)
    args = ["run", str(tiny_config_path), "--out", str(tiny_grid_copy), "--cache-dir", str(session_cache),
            "--data-root", str(data_root)]
    assert main(args) == 0
    assert "1 cells run" in capsys.readouterr().out
    after = store.read_text().splitlines()
    assert len(after) == len(lines) and {json.loads(x)["cell_key"] for x in after} == \
        {json.loads(x)["cell_key"] for x in lines}
    assert (tiny_grid_copy / "results.torn.jsonl").read_text() == torn + "\n"
    assert main(args) == 0
    assert "0 cells run" in capsys.readouterr().out


# ------------------------------------------------------------------ compare
def _store(folder: Path, records: list[dict], wall_seconds: float | None) -> Path:
    folder.mkdir(parents=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if wall_seconds is not None:
        (folder / "summary.json").write_text(json.dumps({"wall_seconds": wall_seconds, "cells_run": len(records)}))
    return folder


def _regressed_stores(tmp_path: Path, n: int) -> tuple[Path, Path]:
    template = _measured_records(1)[0]
    base = [{**template, "cell_key": f"{i:064x}", "ca": 0.7} for i in range(n)]
    cur = [{**r, "ca": 0.5} for r in base]
    return _store(tmp_path / "base", base, 5962.0), _store(tmp_path / "cur", cur, 179.0)


def test_compare_exits_1_on_a_regression_even_when_piped_into_head(tmp_path: Path) -> None:
    base, cur = _regressed_stores(tmp_path, 1500)  # a report far larger than a pipe's buffer
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = f"{sys.executable} -m ebyd_bench compare {base} {cur} | head -1; echo \"rc=${{PIPESTATUS[0]}}\""
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300, env=env)
    assert proc.stdout.splitlines() == ["# ebyd-bench compare: REGRESSION", "rc=1"], proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_compare_still_writes_its_report_when_stdout_is_closed(tmp_path: Path) -> None:
    base, cur = _regressed_stores(tmp_path, 1500)
    report = tmp_path / "report.md"
    code = f"""
import os, sys
r, w = os.pipe()
os.close(r)
os.dup2(w, 1)
from ebyd_bench.cli import main
code = main(["compare", {str(base)!r}, {str(cur)!r}, "--out", {str(report)!r}])
sys.stderr.write(f"CODE={{code}}\\n")
sys.exit(code)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 1 and "CODE=1" in proc.stderr, proc.stderr
    assert report.read_text().startswith("# ebyd-bench compare: REGRESSION")


def test_compare_reports_each_runs_own_wall_clock(tmp_path: Path, capsys) -> None:
    base, cur = _regressed_stores(tmp_path, 3)
    assert main(["compare", str(base), str(cur)]) == 1
    out = capsys.readouterr().out
    assert "Run wall-clock (summary.json): 5962.0 s → 179.0 s (0.03×)." in out
    assert "Total over matched cells" not in out
    (base / "summary.json").unlink()
    assert main(["compare", str(base / "results.jsonl"), str(cur / "results.jsonl")]) == 1
    assert "Run wall-clock (summary.json): not recorded → 179.0 s." in capsys.readouterr().out


# ------------------------------------------------------------------ a diverging model
def test_a_non_finite_loss_is_one_clear_error() -> None:
    import numpy as np
    import torch
    from torch import nn

    from ebyd_bench.benchmark.errors import BenchmarkError
    from ebyd_bench.benchmark.training import DivergedError, TrainRecipe, train_classifier

    model = nn.Sequential(nn.Flatten(), nn.Linear(8 * 8 * 3, 10))
    with torch.no_grad():
        model[1].weight.fill_(math.nan)  # stands for weights that blew up
    images = np.random.default_rng(0).integers(0, 256, (32, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(32) % 10
    recipe = TrainRecipe(epochs=2, batch_size=16, schedule="cosine", augmentation="none")
    with pytest.raises(DivergedError) as exc:
        train_classifier(model, images, labels, recipe, seed=0, desc="train badnets")
    assert isinstance(exc.value, BenchmarkError)
    message = str(exc.value)
    assert message.startswith("train badnets: the loss became nan in epoch 1, step ") and "\n" not in message


def test_text_fine_tuning_checks_its_loss_each_epoch() -> None:
    import numpy as np
    import torch
    from torch import nn

    from ebyd_bench.benchmark.text.training import fine_tune
    from ebyd_bench.benchmark.training import DivergedError

    class Bag(nn.Module):  # a bag-of-characters classifier with the victims' encode() interface
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 2)

        def encode(self, texts, device):
            return {"x": torch.tensor([[len(t), t.count("a"), t.count("b"), 1.0] for t in texts])}

        def forward(self, x):
            return self.linear(x)

    def loss(model, enc, labels):
        return nn.functional.cross_entropy(model(enc["x"]), labels) * math.inf

    texts, labels = ["ab", "ba", "aab", "bb"] * 4, np.array([0, 1, 0, 1] * 4)
    with pytest.raises(DivergedError, match="by the end of epoch 1"):
        fine_tune(Bag(), texts, labels, epochs=2, lr=0.1, batch_size=4, seed=0, loss_fn=loss)


@pytest.mark.e2e
def test_a_diverging_run_exits_2_and_records_nothing(tmp_path: Path, data_root: Path, seeded_cache: Path,
                                                     monkeypatch, capsys) -> None:
    import types

    import torch.nn.functional as F

    from ebyd_bench.benchmark import training

    nan_loss = types.SimpleNamespace(cross_entropy=lambda logits, y: F.cross_entropy(logits, y) * math.nan)
    monkeypatch.setattr(training, "F", nan_loss)
    config, out = tmp_path / "grid.yaml", tmp_path / "out"
    config.write_text(BASE)
    code = main(["run", str(config), "--out", str(out), "--cache-dir", str(seeded_cache),
                 "--data-root", str(data_root), "--device", "cpu"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "diverged" in errors[0], errors
    assert not (out / "results.jsonl").exists()
    assert not any((seeded_cache / "models").rglob("*.safetensors"))  # the diverged model is not cached


# ------------------------------------------------------------------ degenerate defenses in tables
def _flagged_records() -> list[dict]:
    template = _measured_records(1)[0]
    base = {**template, "exposure": None, "defense_uses_exposure": False, "defense_returns_model": True}
    none = {**base, "cell_key": "a" * 64, "defense": "none", "defense_label": "none", "defense_category": "none",
            "defense_info": {}, "ca": 0.80, "asr": 0.99, "ca_before": 0.80, "asr_before": 0.99}
    rp = {**base, "cell_key": "b" * 64, "defense": "rp", "defense_label": "rp", "defense_category": "removal",
          "defense_info": {"rp_infeasible": True, "rp_masks_total": 1200}, "ca": 0.80, "asr": 0.99}
    anp = {**base, "cell_key": "c" * 64, "defense": "anp", "defense_label": "anp", "defense_category": "removal",
           "defense_info": {"anp_pruned": 1200, "anp_masks_total": 1200}, "ca": 0.12, "asr": 0.0}
    fp = {**base, "cell_key": "d" * 64, "defense": "fp", "defense_label": "fp", "defense_category": "removal",
          "defense_info": {"fp_pruned": 100, "fp_units": 512}, "ca": 0.75, "asr": 0.10}
    return [none, rp, anp, fp]


def test_tables_mark_degenerate_defenses_in_every_format(tmp_path: Path) -> None:
    import pandas as pd

    from ebyd_bench.reports import render_leaderboard, render_tables, tables
    from ebyd_bench.results.schema import CellRecord

    records = pd.DataFrame([CellRecord.from_dict(r).to_dict() for r in _flagged_records()])
    df = tables.normalize(records)
    assert dict(zip(df["defense"], df["degenerate"])) == {"none": "", "rp": "infeasible",
                                                          "anp": "all_pruned,chance", "fp": ""}
    paths = render_leaderboard(records, tmp_path, figures=False)
    md = paths["md"].read_text()
    assert "| 80.0 / 99.0 † |" in md and "| 12.0 / 0.0 ‡ § |" in md and "| 75.0 / 10.0 |" in md
    assert "† infeasible" in md and "‡ every unit was pruned" in md and "§ clean accuracy at chance" in md
    tex = paths["tex"].read_text()
    assert r"80.00\textsuperscript{\dag}" in tex and r"12.00\textsuperscript{\ddag\S}" in tex
    assert r"\dag\ infeasible" in tex
    html = paths["html"].read_text()
    assert html.count('<sup class="flag"') == 3 + 3  # marks in the matrix, then the footnotes
    paper = "\n".join(p.read_text() for p in render_tables(records, tmp_path / "tables"))
    assert r"\textsuperscript{\dag}" in paper and r"\textsuperscript{\ddag\S}" in paper and "every unit" in paper


def test_tables_mark_every_cell_of_a_victim_whose_backdoor_was_not_implanted(tmp_path: Path) -> None:
    import pandas as pd

    from ebyd_bench.reports import render_leaderboard, tables
    from ebyd_bench.results.schema import WEAK_BACKDOOR_ASR, CellRecord

    none, _, _, fp = _flagged_records()
    weak = WEAK_BACKDOOR_ASR - 0.01  # e.g. Adv under random crops: the grid was never learned
    weak_none = {**none, "attack": "adv", "cell_key": "e" * 64, "asr": weak, "asr_before": weak}
    weak_fp = {**fp, "attack": "adv", "cell_key": "f" * 64, "asr": 0.01, "asr_before": weak}
    at_bar = {**fp, "cell_key": "9" * 64, "asr_before": WEAK_BACKDOOR_ASR}
    clean = {**fp, "attack": "none", "cell_key": "8" * 64, "asr": None, "asr_before": None}
    records = pd.DataFrame([CellRecord.from_dict(r).to_dict() for r in (none, weak_none, weak_fp, at_bar, clean)])
    df = tables.normalize(records)
    assert list(df["degenerate"]) == ["", "not_implanted", "not_implanted", "", ""]
    md = render_leaderboard(records, tmp_path, figures=False)["md"].read_text()
    assert f"| 80.0 / {100 * weak:.1f} ¶ |" in md and "| 75.0 / 1.0 ¶ |" in md
    assert "¶ the victim's ASR before any defense is below 50 %" in md
    assert md.count("¶") == 3  # two cells and the footnote


def test_tables_without_degenerate_records_show_no_marks(tmp_path: Path) -> None:
    import pandas as pd

    from ebyd_bench.reports import render_leaderboard
    from ebyd_bench.results.schema import CellRecord

    none, _, _, fp = _flagged_records()
    records = pd.DataFrame([CellRecord.from_dict(r).to_dict() for r in (none, fp)])
    paths = render_leaderboard(records, tmp_path, figures=False)
    assert not any(m in paths["md"].read_text() for m in "†‡§")
    assert "textsuperscript" not in paths["tex"].read_text() and 'class="flag"' not in paths["html"].read_text()
