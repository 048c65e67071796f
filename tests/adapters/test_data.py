"""CIFAR-10 loading: ImageFolder tree, torchvision's batch format, caching, errors."""

import pickle

import numpy as np
import pytest

from ebyd_bench.adapters.torchvision_data import load_cifar10
from ebyd_bench.benchmark.errors import DataError


def write_batches(root, n_per_batch=4):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    expected = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n_per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
        expected[name] = (data, labels)
    return expected


def test_torchvision_batch_format_is_read_without_arbitrary_unpickling(tmp_path):
    expected = write_batches(tmp_path)
    ds = load_cifar10(tmp_path, cache_dir=tmp_path / "cache")
    assert ds.train.images.shape == (20, 32, 32, 3) and ds.test.images.shape == (4, 32, 32, 3)
    first = expected["data_batch_1"][0][0].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(ds.train.images[0], first)
    assert ds.test.labels.tolist() == expected["test_batch"][1]
    assert ds.source.startswith("torchvision:") and ds.note == ""


def test_malicious_batch_file_is_refused(tmp_path):
    write_batches(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": Evil(), "labels": []}, f)
    with pytest.raises(DataError, match="refusing to load"):
        load_cifar10(tmp_path)


def test_missing_data_names_both_layouts(tmp_path):
    with pytest.raises(DataError) as exc:
        load_cifar10(tmp_path / "nothing")
    assert "cifar-10-batches-py" in str(exc.value) and "cifar10" in str(exc.value)


def test_imagefolder_copy_is_decoded_cached_and_labelled(cifar):
    assert cifar.train.images.shape == (50000, 32, 32, 3) and cifar.test.images.shape == (10000, 32, 32, 3)
    assert cifar.train.images.dtype == np.uint8
    assert np.bincount(cifar.test.labels).tolist() == [1000] * 10
    assert "JPEG" in cifar.note and cifar.classes[0] == "airplane"


def test_corrupted_array_cache_is_rebuilt_with_a_warning(tmp_path, data_root, cifar, caplog):
    from ebyd_bench.adapters.torchvision_data import _array_cache_path

    source = f"imagefolder:{(data_root / 'cifar10').resolve()}"
    path = _array_cache_path(source, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an npz")
    with caplog.at_level("WARNING"):
        assert load_cifar10(data_root, cache_dir=tmp_path).digest == cifar.digest
    assert "cannot be used" in caplog.text
