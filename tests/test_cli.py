"""Command-line behaviour: listing, and bad input → one message, exit code 2, nothing written."""

import pytest

from benchmark.cli import main


def test_ls_lists_registered_methods(capsys):
    assert main(["ls", "attacks"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert {"badnets", "blend", "wanet"} <= set(names)
    assert main(["ls", "defenses"]) == 0
    out = capsys.readouterr().out
    assert "rp" in out and "removal" in out and "builtin" in out
    assert main(["ls", "exposures"]) == 0
    assert "cul" in capsys.readouterr().out


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


def test_missing_data_exits_2(tmp_path, capsys, tiny_config_path):
    out = tmp_path / "out"
    code = main(["run", str(tiny_config_path), "--out", str(out), "--cache-dir", str(tmp_path / "c"),
                 "--data-root", str(tmp_path / "nowhere")])
    assert code == 2 and "CIFAR-10 not found" in capsys.readouterr().err
    assert not out.exists()


def test_report_without_results_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no results" in capsys.readouterr().err
