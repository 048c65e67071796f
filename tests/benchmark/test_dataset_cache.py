"""The decoded-dataset cache (``<cache>/datasets/cifar10-<hex>.npz``): checksummed by a SHA-256 sidecar,
listed, verified and removed by `ebyd-bench cache`, and a damaged copy rebuilt with one warning."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ebyd_bench.adapters.torchvision_data import CIFAR10_CLASSES, load_cifar10
from ebyd_bench.benchmark.cache import checksum_problem, checksum_sidecar, file_sha256
from ebyd_bench.cli import main

LOGGER = "ebyd_bench.adapters.torchvision_data"


@pytest.fixture
def png_root(tmp_path) -> Path:
    """A CIFAR-10 ImageFolder of 20 training and 10 test PNGs: decoded in milliseconds."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for split, n in (("train", 2), ("test", 1)):
        for cls in CIFAR10_CLASSES:
            folder = root / "cifar10" / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def _npz(cache: Path) -> Path:
    (path,) = (cache / "datasets").glob("cifar10-*.npz")
    return path


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


def test_the_decoded_arrays_are_written_with_a_sha256_sidecar(png_root, cache, caplog):
    first = load_cifar10(png_root, cache)
    path = _npz(cache)
    sidecar = json.loads(checksum_sidecar(path).read_text())
    assert sidecar["sha256"] == file_sha256(path) and sidecar["size"] == path.stat().st_size
    assert sidecar["file"] == path.name and sidecar["dataset"] == "cifar10" and sidecar["source"] == first.source
    assert checksum_problem(path) is None
    assert not list((cache / "datasets").glob("*.tmp"))
    with caplog.at_level(logging.WARNING):
        again = load_cifar10(png_root, cache)  # from the cache: same arrays, no warning
    assert again.digest == first.digest and _warnings(caplog) == []
    assert np.array_equal(again.train.images, first.train.images)


def _flip_two_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for at in (len(data) // 3, 2 * len(data) // 3):
        data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _drop_sidecar(path: Path) -> None:
    checksum_sidecar(path).unlink()


def _garble_sidecar(path: Path) -> None:
    checksum_sidecar(path).write_text("{not json")


def _drop_arrays(path: Path) -> None:
    path.unlink()  # a sidecar left without its file


DAMAGE = {"flipped-bytes": _flip_two_bytes, "truncated": _truncate, "missing-sidecar": _drop_sidecar,
          "garbled-sidecar": _garble_sidecar, "sidecar-alone": _drop_arrays}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_copy_is_rebuilt_from_the_source_with_one_warning(png_root, cache, caplog, damage):
    reference = load_cifar10(png_root, cache)
    path = _npz(cache)
    DAMAGE[damage](path)
    assert checksum_problem(path) is not None
    with caplog.at_level(logging.WARNING):
        rebuilt = load_cifar10(png_root, cache)
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "cannot be used" in warnings[0] and "rebuilding it from" in warnings[0]
    assert rebuilt.digest == reference.digest
    assert checksum_problem(path) is None  # the fresh copy has its own sidecar
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert load_cifar10(png_root, cache).digest == reference.digest
    assert _warnings(caplog) == []


def test_a_checksummed_file_that_is_not_an_array_archive_is_rebuilt_never_unpickled(png_root, cache, caplog):
    """Loading stays ``allow_pickle=False``: an object array (a pickle) is refused even with a valid sidecar."""
    from ebyd_bench.benchmark.cache import save_checksummed

    reference = load_cifar10(png_root, cache)
    path = _npz(cache)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, train_x=np.array([{"a": 1}], dtype=object), train_y=np.zeros(1), test_x=np.zeros(1),
                     test_y=np.zeros(1))

    save_checksummed(path, write, {"dataset": "cifar10", "source": reference.source})
    assert checksum_problem(path) is None
    with caplog.at_level(logging.WARNING):
        assert load_cifar10(png_root, cache).digest == reference.digest
    assert len(_warnings(caplog)) == 1 and "unreadable" in _warnings(caplog)[0]


def test_a_damaged_copy_costs_one_warning_line_and_no_traceback(png_root, cache):
    load_cifar10(png_root, cache)
    _flip_two_bytes(_npz(cache))
    code = ("import sys; from ebyd_bench.adapters.torchvision_data import load_cifar10; "
            "print(load_cifar10(sys.argv[1], sys.argv[2]).digest)")
    proc = subprocess.run([sys.executable, "-c", code, str(png_root), str(cache)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "decoding" not in ln]
    assert len(lines) == 1 and "cannot be used" in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize("damage", ["flipped-bytes", "truncated", "missing-sidecar", "sidecar-alone"])
def test_cache_ls_verify_and_rm_address_the_decoded_dataset(png_root, cache, capsys, damage):
    load_cifar10(png_root, cache)
    path = _npz(cache)
    name = path.stem  # cifar10-<16 hex>
    args = ["--cache-dir", str(cache)]
    assert main(["cache", "ls", *args]) == 0
    out = capsys.readouterr().out
    assert f"datasets      {name}" in out and "cifar10 decoded arrays of imagefolder:" in out
    assert "1 artifacts" in out
    assert main(["cache", "verify", *args]) == 0 and "1 of 1 artifacts" in capsys.readouterr().out

    DAMAGE[damage](path)
    assert main(["cache", "verify", *args]) == 1
    out = capsys.readouterr().out
    assert f"datasets/{name}  decoded dataset" in out and "0 of 1 artifacts" in out
    assert f"ebyd-bench cache rm {name}" in out
    assert main(["cache", "rm", name, *args]) == 0
    assert f"removed datasets/{name}" in capsys.readouterr().out
    assert not path.exists() and not checksum_sidecar(path).exists()
    assert main(["cache", "verify", *args]) == 0 and "0 of 0 artifacts" in capsys.readouterr().out


def test_cache_rm_takes_the_hex_digits_of_a_dataset_and_its_kind(png_root, cache, capsys):
    load_cifar10(png_root, cache)
    path = _npz(cache)
    hex_digits = path.stem.rpartition("-")[2]
    assert main(["cache", "rm", hex_digits[:8], "--kind", "datasets", "--cache-dir", str(cache)]) == 0
    assert not path.exists() and not checksum_sidecar(path).exists()
    assert main(["cache", "ls", "--cache-dir", str(cache), "--kind", "datasets"]) == 0
    assert "0 artifacts" in capsys.readouterr().out
