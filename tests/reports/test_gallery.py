"""The trigger gallery: one PNG + PDF figure, placeholders (never stand-ins) for attacks it cannot set up."""

import json

import numpy as np
import pytest

from ebyd_bench.attacks_registry.base import AttackContext
from ebyd_bench.reports.gallery import clean_examples, gallery_rows, render_gallery
from ebyd_bench.benchmark.models.resnet_cifar import resnet18_narrow

TINY_ADV = {"name": "adv", "surrogate_epochs": 1, "surrogate_schedule": "multistep", "surrogate_batch_size": 64}


@pytest.fixture(scope="module")
def examples(cifar):
    return clean_examples(cifar, n_images=4)


def tiny_ctx_factory(cifar, calls):
    idx = np.concatenate([np.flatnonzero(cifar.train.labels == c)[:10] for c in range(10)])
    store = {}

    def artifact(name, params, build):
        key = (name, json.dumps(params, sort_keys=True, default=str))
        return store[key] if key in store else store.setdefault(key, build())

    def factory(attack, seed):
        calls.append((attack.name, seed))
        return AttackContext(cifar.train.images[idx], cifar.train.labels[idx], 10, "cpu",
                             lambda **kw: resnet18_narrow(width=8, **kw), artifact)

    return factory


def test_clean_examples_are_one_per_non_target_class(examples):
    images, labels = examples
    assert images.shape == (4, 32, 32, 3) and labels.tolist() == [1, 2, 3, 4]


def test_attacks_without_context_or_file_become_placeholders_with_the_reason(examples):
    images, labels = examples
    rows = {r.name: r for r in gallery_rows(images, labels, ["badnets", "smooth", "adv", "dynamic", "none"])}
    assert set(rows) == {"badnets", "smooth", "adv", "dynamic"}  # the clean control has no trigger
    assert rows["smooth"].images is None and rows["smooth"].note.startswith("needs trigger file")
    assert "best_universal.npy" in rows["smooth"].note
    assert rows["adv"].images is None and rows["adv"].note.startswith("needs training")
    assert rows["dynamic"].images is None and rows["dynamic"].note.startswith("needs training")
    assert rows["badnets"].images.shape == images.shape and not np.array_equal(rows["badnets"].images, images)


def test_context_factory_and_trigger_file_make_real_rows(cifar, examples, tmp_path):
    images, labels = examples
    path = tmp_path / "best_universal.npy"
    np.save(path, np.random.default_rng(0).uniform(0, 0.2, (1, 32, 32, 3)).astype(np.float32))
    calls = []
    rows = gallery_rows(images, labels, [TINY_ADV, {"name": "smooth", "trigger_file": str(path)}], seed=3,
                        ctx_factory=tiny_ctx_factory(cifar, calls))
    adv, smooth = rows
    assert calls == [("adv", 3)]  # only attacks that train parts ask for a context
    assert adv.images is not None and adv.note == "training poison"
    assert (adv.images[:, 29:32, 29:32] != images[:, 29:32, 29:32]).any()
    assert smooth.images is not None and not np.array_equal(smooth.images, images)


def test_render_gallery_writes_one_png_and_one_pdf(cifar, tmp_path):
    paths = render_gallery(cifar, tmp_path / "gallery", attacks=["onepixel", "sig", "smooth", "adv"], seed=0)
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"]
    png, pdf = sorted(paths, key=lambda p: p.suffix != ".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:4] == b"%PDF"
