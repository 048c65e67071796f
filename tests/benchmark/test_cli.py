"""Command-line behaviour: listing, and bad input → one message, exit code 2, nothing written."""

import os

import pytest

from ebyd_bench.cli import main


def test_ls_lists_registered_methods(capsys):
    assert main(["ls", "attacks"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert {"badnets", "blend", "wanet"} <= set(names)
    assert main(["ls", "defenses"]) == 0
    out = capsys.readouterr().out
    assert "rp" in out and "removal" in out and "builtin" in out
    assert main(["ls", "exposures"]) == 0
    assert "cul" in capsys.readouterr().out


def test_ls_name_shows_every_parameter_with_type_range_default_and_note(capsys):
    assert main(["ls", "defenses", "rp"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("rp  (builtin)  [removal]") and "{name: rp, <parameter>: <value>}" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert rows["epochs"].split() == ["epochs", "int", "≥", "1", "=", "20"]
    assert rows["selection"].split()[-2:] == ["=", "'dd_rule'"] and "'fraction'" in rows["selection"]
    assert "# ablation only" in rows["prune_bias"] and "float > 0" in rows["lr"]


def test_ls_name_of_a_model_lists_only_what_a_grid_sets(capsys):
    assert main(["ls", "models", "resnet18_narrow"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert rows == [["width", "int", "≥", "8", "=", "16"]]  # not num_classes / norm_layer, which the harness passes


def test_ls_unknown_name_exits_2_with_suggestions(capsys):
    assert main(["ls", "defenses", "rpp"]) == 2
    assert "did you mean 'rp'" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["attacks", "exposures", "defenses", "models", "datasets"])
def test_every_registered_entry_can_be_described(kind, capsys):
    from ebyd_bench.benchmark.registries import ALL

    for name in ALL[kind].names():
        assert main(["ls", kind, name]) == 0, name
        assert capsys.readouterr().out.startswith(f"{name}  (")


@pytest.mark.parametrize("body, needle", [
    ("attacks: [badnet]\n", "did you mean 'badnets'"),
    ("attacks: [badnets\n", "not valid YAML"),
    ("attacks: [{name: badnets, poison_rate: 2}]\n", "poison_rate"),
])
def test_bad_config_exits_2_and_writes_nothing(tmp_path, capsys, body, needle):
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(body)
    out, cache = tmp_path / "out", tmp_path / "cache"
    code = main(["run", str(cfg), "--out", str(out), "--cache-dir", str(cache), "--data-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.startswith("error:")
    assert not out.exists() and not cache.exists()


def test_a_bad_override_exits_2_and_writes_nothing(tmp_path, capsys, tiny_config_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    code = main(["run", str(tiny_config_path), "--out", str(out), "--cache-dir", str(cache),
                 "--data-root", str(tmp_path), "--set", "recipe.epochs=0"])
    assert code == 2 and "parameter 'epochs'" in capsys.readouterr().err
    assert not out.exists() and not cache.exists()


def test_missing_data_exits_2(tmp_path, capsys, tiny_config_path):
    out = tmp_path / "out"
    code = main(["run", str(tiny_config_path), "--out", str(out), "--cache-dir", str(tmp_path / "c"),
                 "--data-root", str(tmp_path / "nowhere")])
    assert code == 2 and "CIFAR-10 not found" in capsys.readouterr().err
    assert not out.exists()


def test_report_without_results_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no results" in capsys.readouterr().err


#: hyper-parameters whose out-of-range values would silently change a run (e.g. no epochs at all)
RANGED = {"epochs": "≥ 1", "batch_size": "≥ 1", "iterations": "≥ 1", "lr": "> 0", "momentum": "≥ 0",
          "weight_decay": "≥ 0"}


@pytest.mark.parametrize("kind", ["attacks", "exposures", "defenses"])
def test_every_method_range_checks_its_common_hyper_parameters(kind):
    from ebyd_bench.benchmark.describe import parameters
    from ebyd_bench.benchmark.registries import ALL
    from ebyd_bench.benchmark.text.training import TextRecipe
    from ebyd_bench.benchmark.training import TrainRecipe

    entries = [(name, ALL[kind].get(name)) for name in ALL[kind].names()]
    if kind == "defenses":
        entries += [("TrainRecipe", TrainRecipe), ("TextRecipe", TextRecipe)]
    unchecked = [(name, param, kind_) for name, obj in entries for param, kind_, _, _ in parameters(obj)
                 if param in RANGED and RANGED[param] not in kind_]
    assert not unchecked, f"use the types of benchmark.params for these: {unchecked}"


@pytest.mark.e2e
def test_a_run_off_a_terminal_prints_one_line_per_stage_and_no_bar_frames(tiny_grid, session_cache, data_root,
                                                                           tmp_path):
    """In CI or behind ``| tee`` a run's stderr holds one line per stage, no carriage-return frames."""
    import subprocess
    import sys

    from conftest import TINY_CONFIG

    env = {k: v for k, v in os.environ.items() if k != "EBYD_PROGRESS"}
    run = subprocess.run([sys.executable, "-m", "ebyd_bench", "run", str(TINY_CONFIG), "--out", str(tmp_path / "out"),
                          "--cache-dir", str(session_cache), "--data-root", str(data_root)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "\r" not in run.stderr
    lines = run.stderr.splitlines()
    assert [line.split("]")[0].split(",")[0] for line in lines] == [f"[{i}/8" for i in range(1, 9)], lines
