"""Each trigger's defining property, checked on real CIFAR-10 images."""

import numpy as np
import pytest
import torch

from ebyd_bench.attacks_registry.image.badnets import GRID
from ebyd_bench.benchmark.registries import ATTACKS


@pytest.fixture(scope="module")
def images(cifar):
    return cifar.test.images[:64], cifar.test.labels[:64]


def make(name, seed=0, **params):
    attack = ATTACKS.get(name)(**params)
    attack.setup(seed)
    return attack


def test_badnets_stamps_the_grid_and_nothing_else(images):
    x, _ = images
    out = make("badnets").apply(x)
    assert (out[:, 29:32, 29:32, :] == GRID[None, :, :, None]).all()
    assert GRID[2].tolist() == [255, 0, 255]  # MTBA row 31, not CD/EBYD's (255, 255, 0)
    untouched = np.ones((32, 32), bool)
    untouched[29:, 29:] = False
    assert (out[:, untouched] == x[:, untouched]).all()


def test_blend_uses_one_fixed_pattern_at_weight_0_2(images):
    x, _ = images
    attack = make("blend")
    out = attack.apply(x).astype(np.float64)
    # recover the pattern from every image: (x' − 0.8·x) / 0.2, up to truncation
    pattern = (out - 0.8 * x) / 0.2
    per_image = pattern.mean(axis=3)
    assert np.abs(per_image - per_image[0]).max() <= 5.01  # identical up to the 1-unit truncation / 0.2
    assert np.abs(per_image[0] - attack._pattern).max() <= 5.01
    assert np.abs(pattern - pattern[..., :1]).max() <= 5.01  # broadcast to the three channels


def test_blend_per_image_mode_differs_between_images(images):
    x, _ = images
    out = make("blend", per_image=True).apply(np.repeat(x[:1], 2, axis=0))
    assert not np.array_equal(out[0], out[1])


def test_blend_pattern_depends_on_seed_only():
    assert np.array_equal(make("blend", seed=3)._pattern, make("blend", seed=3)._pattern)
    assert not np.array_equal(make("blend", seed=3)._pattern, make("blend", seed=4)._pattern)


def test_wanet_applies_the_same_warp_to_every_image(images):
    x, _ = images
    attack = make("wanet")
    one = np.repeat(x[:1], 3, axis=0)
    out = attack.apply(one)
    assert np.array_equal(out[0], out[1]) and np.array_equal(out[1], out[2])
    # same field across calls and batches
    assert np.array_equal(attack.apply(x[:1])[0], out[0])
    # a real but small warp: pixels move, the image stays recognisable
    diff = np.abs(attack.apply(x).astype(int) - x.astype(int))
    assert diff.mean() > 0.5 and diff.mean() < 40


def test_wanet_field_strength_follows_s_and_k():
    from ebyd_bench.attacks_registry.image.wanet import warp_field

    lin = torch.linspace(-1, 1, 32)
    rows, cols = torch.meshgrid(lin, lin, indexing="ij")
    identity = torch.stack((cols, rows), dim=2)[None]
    weak = (warp_field(np.random.default_rng(0), 4, 0.5) - identity).abs().mean()
    strong = (warp_field(np.random.default_rng(0), 4, 1.0) - identity).abs().mean()
    assert strong == pytest.approx(2 * weak, rel=0.05)
    assert weak * 16 < 0.5  # the default s = 0.5 moves pixels by well under a pixel on average


def test_poison_train_relabels_exactly_floor_rate_n(images):
    x, y = images
    attack = make("badnets", poison_rate=0.25)
    ps = attack.poison_train(x, y, seed=0)
    assert len(ps.poison_indices) == 16
    assert (ps.labels[ps.poison_indices] == 0).all()
    clean = np.setdiff1d(np.arange(len(y)), ps.poison_indices)
    assert np.array_equal(ps.images[clean], x[clean]) and np.array_equal(ps.labels[clean], y[clean])
    assert np.array_equal(attack.poison_train(x, y, seed=0).poison_indices, ps.poison_indices)


def test_poison_test_drops_target_class(images):
    x, y = images
    px, py = make("badnets").poison_test(x, y)
    assert len(py) == int((y != 0).sum()) and (py != 0).all()


def test_uint8_arithmetic_saturates_instead_of_wrapping():
    from ebyd_bench.attacks_registry.base import clip_uint8

    assert clip_uint8(np.array([300.4, -3.0, 128.9])).tolist() == [255, 0, 128]
