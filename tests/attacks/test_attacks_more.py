"""Defining properties of the OnePixel, Trojan, SIG, Nash, Smooth, Adv and Dynamic triggers on real CIFAR-10."""

import copy
import json

import numpy as np
import pytest
import torch

from ebyd_bench.attacks_registry.base import AttackContext
from ebyd_bench.attacks_registry.image.badnets import GRID
from ebyd_bench.benchmark.models.resnet_cifar import resnet18_narrow
from ebyd_bench.benchmark.registries import ATTACKS


@pytest.fixture(scope="module")
def images(cifar):
    return cifar.test.images[:64], cifar.test.labels[:64]


@pytest.fixture(scope="module")
def train_subset(cifar):
    """20 training images per class (the split is stored class by class, so take a stratified slice)."""
    idx = np.concatenate([np.flatnonzero(cifar.train.labels == c)[:20] for c in range(10)])
    return cifar.train.images[idx], cifar.train.labels[idx]


def make(name, seed=0, ctx=None, **params):
    attack = ATTACKS.get(name)(**params)
    attack.setup(seed, ctx)
    return attack


def make_ctx(images, labels, store=None, built=None):
    """An AttackContext with an in-memory artifact cache; ``built`` records every cache miss."""
    store = {} if store is None else store

    def artifact(name, params, build):
        key = (name, json.dumps(params, sort_keys=True, default=str))
        if key not in store:
            if built is not None:
                built.append(name)
            store[key] = build()
        return store[key]

    return AttackContext(images, labels, 10, "cpu", lambda **kw: resnet18_narrow(width=8, **kw), artifact)


def outside(rows: slice, cols: slice) -> np.ndarray:
    keep = np.ones((32, 32), bool)
    keep[rows, cols] = False
    return keep


def test_all_ten_attacks_and_none_are_registered():
    expected = {"onepixel", "badnets", "trojan", "blend", "sig", "adv", "smooth", "nash", "dynamic", "wanet", "none"}
    assert expected <= set(ATTACKS.names())
    rates = {n: ATTACKS.get(n)().poison_rate for n in expected - {"none"}}
    assert rates == {"onepixel": 0.10, "badnets": 0.10, "trojan": 0.10, "blend": 0.10, "sig": 0.08, "adv": 0.08,
                     "smooth": 0.10, "nash": 0.10, "dynamic": 0.10, "wanet": 0.08}
    assert all(ATTACKS.get(n)().target == 0 for n in expected)


# ----------------------------------------------------------------------------- OnePixel
def test_onepixel_sets_only_pixel_16_16_to_white(images):
    x, _ = images
    out = make("onepixel").apply(x)
    assert (out[:, 16, 16, :] == 255).all()
    keep = outside(slice(16, 17), slice(16, 17))
    assert np.array_equal(out[:, keep], x[:, keep])


# ----------------------------------------------------------------------------- Trojan
def test_trojan_adds_the_listed_values_on_rows_cols_25_27_with_saturation(images):
    from ebyd_bench.attacks_registry.image.trojan import TROJAN_VALUES

    x, _ = images
    out = make("trojan").apply(x)
    patch = np.clip(x[:, 25:28, 25:28, :].astype(np.float64) + TROJAN_VALUES.transpose(1, 2, 0)[None], 0, 255)
    assert np.array_equal(out[:, 25:28, 25:28, :], patch.astype(np.uint8))
    keep = outside(slice(25, 28), slice(25, 28))
    assert np.array_equal(out[:, keep], x[:, keep])
    assert TROJAN_VALUES[0, 0, 0] == pytest.approx(207.4) and TROJAN_VALUES[1, 1, 1] == 0.0


def test_trojan_saturates_instead_of_wrapping_and_wrap_mode_reproduces_mtba():
    bright = np.full((1, 32, 32, 3), 250, np.uint8)
    assert (make("trojan").apply(bright)[0, 25, 25] == 255).all()  # 250 + 207.4 saturates
    wrapped = make("trojan", trojan_mode="wrap").apply(bright)[0, 25, 25]
    assert wrapped[0] == (250 + 207) % 256 == 201  # MTBA's uint8 overflow (457.4 → 201)


def test_trojan_trigger_file_is_loaded_and_its_digest_enters_the_params(tmp_path, images):
    from ebyd_bench.attacks_registry.image.trojan import default_trigger

    x, _ = images
    path = tmp_path / "trojan.npz"
    np.savez(path, x=default_trigger().transpose(2, 0, 1))  # the original's 3×32×32 layout
    from_file = make("trojan", trigger_file=str(path))
    assert np.array_equal(from_file.apply(x), make("trojan").apply(x))
    digest = from_file.params()["trigger_sha256"]
    assert digest and digest != make("trojan").params()["trigger_sha256"]
    np.savez(path, x=np.zeros((3, 32, 32), np.float32))
    assert make("trojan", trigger_file=str(path)).params()["trigger_sha256"] != digest


# ----------------------------------------------------------------------------- SIG
SHIPPED_ROW = [0, 14, 19, 13, -1, -15, -19, -12, 2, 15, 19, 11, -3, -16, -19, -10,
               4, 17, 19, 9, -5, -17, -18, -8, 6, 18, 18, 7, -7, -18, -18, -6]


def test_sig_signal_is_trunc_20_sin_0_8_j():
    from ebyd_bench.attacks_registry.image.sig import sig_signal

    assert sig_signal().tolist() == SHIPPED_ROW
    assert np.abs(sig_signal()).max() == 19  # amplitude 20 truncated


def test_sig_adds_the_signal_down_each_column_with_clipping(images):
    x, _ = images
    out = make("sig").apply(x).astype(np.int64)
    expected = np.clip(x.astype(np.int64) + np.array(SHIPPED_ROW)[None, None, :, None], 0, 255)
    assert np.array_equal(out, expected)
    unclipped = (x > 20) & (x < 235)
    delta = out - x.astype(np.int64)
    assert np.array_equal(delta[unclipped], np.broadcast_to(np.array(SHIPPED_ROW)[None, None, :, None], x.shape)[unclipped])


def test_sig_train_and_test_poisons_are_identical(images):
    x, y = images
    attack = make("sig", poison_rate=0.25)
    ps = attack.poison_train(x, y, seed=0)
    assert np.array_equal(ps.images[ps.poison_indices], attack.apply(x[ps.poison_indices]))
    px, _ = attack.poison_test(x, y)
    assert np.array_equal(px, attack.apply(x[y != 0]))


def test_sig_mtba_mode_blends_the_wrapped_mask(images):
    x, _ = images
    out = make("sig", sig_mode="mtba").apply(x)
    mask = np.mod(np.array(SHIPPED_ROW), 256)[None, None, :, None]
    assert np.array_equal(out, np.clip(0.8 * x.astype(np.float64) + 0.2 * mask, 0, 255).astype(np.uint8))


def test_sig_clean_label_mode_poisons_80_percent_of_the_target_class(train_subset):
    x, y = train_subset
    ps = make("sig", label_mode="clean").poison_train(x, y, seed=0)
    assert (y[ps.poison_indices] == 0).all() and len(ps.poison_indices) == int(0.8 * (y == 0).sum())
    assert np.array_equal(ps.labels, y)


# ----------------------------------------------------------------------------- Nash
def test_nash_matches_pilgram_nashville(images):
    pilgram = pytest.importorskip("pilgram")
    from PIL import Image

    x, _ = images
    out = make("nash").apply(x[:8])
    for i in range(8):
        assert np.array_equal(out[i], np.asarray(pilgram.nashville(Image.fromarray(x[i])).convert("RGB")))
    assert np.abs(out.astype(int) - x[:8]).mean() > 5  # a visible global filter


# ----------------------------------------------------------------------------- Smooth
def test_smooth_without_its_file_is_unavailable(tmp_path):
    with pytest.raises(ValueError, match="best_universal.npy"):
        make("smooth")
    with pytest.raises(ValueError, match="does not exist"):
        make("smooth", trigger_file=str(tmp_path / "absent.npy"))


def test_smooth_applies_minmax_of_x_plus_universal(tmp_path, images):
    x, _ = images
    u = np.random.default_rng(0).uniform(0, 0.2, size=(2, 32, 32, 3)).astype(np.float32)
    path = tmp_path / "best_universal.npy"
    np.save(path, u)
    out = make("smooth", trigger_file=str(path)).apply(x)
    for i in range(len(x)):
        v = x[i].astype(np.float64) / 255 + u[0]
        expected = np.clip(255 * (v - v.min()) / (v.max() - v.min()), 0, 255).astype(np.uint8)
        assert np.array_equal(out[i], expected)
    assert make("smooth", trigger_file=str(path)).params()["trigger_sha256"] is not None


# ----------------------------------------------------------------------------- Adv
@pytest.fixture(scope="module")
def adv_setup(train_subset):
    x, y = train_subset
    built = []
    ctx = make_ctx(x, y, built=built)
    attack = make("adv", ctx=ctx, surrogate_epochs=1, surrogate_schedule="multistep", surrogate_batch_size=64)
    return attack, ctx, built


def test_adv_training_poisons_are_pgd_within_16_of_the_original_plus_the_grid(adv_setup, images):
    attack, _, _ = adv_setup
    x, y = images
    ps = attack.poison_train(x, y, seed=0)
    idx = ps.poison_indices
    assert len(idx) == int(0.08 * len(y)) and (ps.labels[idx] == 0).all()
    poisoned, original = ps.images[idx].astype(int), x[idx].astype(int)
    assert (ps.images[idx][:, 29:32, 29:32, :] == GRID[None, :, :, None]).all()
    keep = outside(slice(29, 32), slice(29, 32))
    diff = poisoned[:, keep] - original[:, keep]
    assert np.abs(diff).max() <= 16 and np.abs(diff).mean() > 4  # the L∞ ball is used, not left empty
    clean = np.setdiff1d(np.arange(len(y)), idx)
    assert np.array_equal(ps.images[clean], x[clean])
    assert np.array_equal(attack.poison_train(x, y, seed=0).images, ps.images)  # deterministic


def test_adv_test_poisons_get_the_grid_only(adv_setup, images):
    attack, _, _ = adv_setup
    x, _ = images
    assert np.array_equal(attack.apply(x), make("badnets").apply(x))


def test_adv_surrogate_is_trained_once_through_the_artifact_cache(adv_setup, images):
    attack, ctx, built = adv_setup
    again = make("adv", ctx=ctx, surrogate_epochs=1, surrogate_schedule="multistep", surrogate_batch_size=64)
    assert built == ["adv_surrogate"]
    x, y = images
    assert np.array_equal(again.poison_train(x, y, 0).images, attack.poison_train(x, y, 0).images)
    with pytest.raises(ValueError, match="AttackContext"):
        make("adv")


def test_adv_clean_label_mode_keeps_labels(adv_setup, train_subset):
    attack, ctx, _ = adv_setup
    x, y = train_subset
    clean = make("adv", ctx=ctx, label_mode="clean", surrogate_epochs=1, surrogate_schedule="multistep",
                 surrogate_batch_size=64)
    ps = clean.poison_train(x, y, seed=0)
    assert (y[ps.poison_indices] == 0).all() and len(ps.poison_indices) == int(0.8 * (y == 0).sum())
    assert np.array_equal(ps.labels, y)


# ----------------------------------------------------------------------------- Dynamic
TINY_DYNAMIC = dict(channel_init=4, mask_epochs=1, epochs=1, train_limit=128, batch_size=32)


@pytest.fixture(scope="module")
def dynamic_setup(train_subset):
    x, y = train_subset
    built = []
    ctx = make_ctx(x, y, built=built)
    return make("dynamic", ctx=ctx, **TINY_DYNAMIC), ctx, built


def test_dynamic_follows_the_pattern_and_mask_formulas(dynamic_setup, images):
    from ebyd_bench.benchmark.tensors import normalize, to_unit

    attack, _, _ = dynamic_setup
    x, _ = images
    xu = to_unit(x)
    with torch.no_grad():
        xn = normalize(xu, (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))
        pattern = torch.tanh(attack._G(xn)) / (2 + 1e-7) + 0.5
        m = torch.tanh(attack._M(xn)) / (2 + 1e-7) + 0.5
        mask = torch.tanh(20 * m - 10) / (2 + 1e-7) + 0.5
        expected = (xu + (pattern - xu) * mask).permute(0, 2, 3, 1).double().numpy() * 255
    out = attack.apply(x)
    assert np.abs(out.astype(np.float64) - np.clip(expected, 0, 255)).max() <= 1.0  # truncation only
    assert mask.shape == (len(x), 1, 32, 32) and 0 <= float(mask.min()) and float(mask.max()) <= 1
    assert not np.array_equal(out, x)
    closed = copy.deepcopy(attack)  # a mask network that is almost off everywhere (M_k ≈ 1e-6, not 0)
    torch.nn.init.constant_(closed._M[-1].bias, -0.918)
    torch.nn.init.zeros_(closed._M[-1].weight)
    assert np.array_equal(closed.apply(x), x)  # no float drift of one grey level outside the mask


def test_dynamic_generators_are_cached_and_deterministic_under_the_seed(dynamic_setup, train_subset, images):
    attack, ctx, built = dynamic_setup
    x, _ = images
    again = make("dynamic", ctx=ctx, **TINY_DYNAMIC)
    assert built == ["dynamic_generators"]  # trained once, then read from the cache
    assert np.array_equal(again.apply(x), attack.apply(x))
    fresh = make("dynamic", ctx=make_ctx(*train_subset), **TINY_DYNAMIC)  # retrained from scratch
    assert np.array_equal(fresh.apply(x), attack.apply(x))
    other = make("dynamic", seed=1, ctx=make_ctx(*train_subset), **TINY_DYNAMIC)
    assert not np.array_equal(other.apply(x), attack.apply(x))
    with pytest.raises(ValueError, match="AttackContext"):
        make("dynamic")


def test_dynamic_triggers_differ_between_images(dynamic_setup, images):
    attack, _, _ = dynamic_setup
    x, _ = images
    delta = attack.apply(x[:2]).astype(int) - x[:2].astype(int)
    assert not np.array_equal(delta[0], delta[1])
