"""Text triggers (docs/methods.md §4): each attack's defining property, on real SST-2 sentences."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import ebyd_bench.attacks_registry.text  # noqa: F401  (registers the text attacks)
from ebyd_bench.attacks_registry.text.base import TextAttackContext
from ebyd_bench.benchmark.errors import DataError
from ebyd_bench.benchmark.registries import ATTACKS

N = 200


@pytest.fixture(scope="module")
def root(text_root) -> Path:
    if not (text_root / "sst2_syntactic" / "train.tsv").is_file():
        pytest.skip("no sst2_syntactic/ under the text data root (set EBYD_DATA_ROOT)")
    return text_root


@pytest.fixture(scope="module")
def sst2(root):
    from ebyd_bench.adapters.text_data import load_text_dataset

    return load_text_dataset("sst2", root)


@pytest.fixture(scope="module")
def sample(sst2):
    return list(sst2.train.texts[:N]), sst2.train.labels[:N].copy()


def attack(name, root=None, dataset="sst2", **params):
    a = ATTACKS.get(name)(**params)
    a.setup(0, TextAttackContext(dataset, root, 2, "cpu", None, None, None))
    return a


def inserted(original: str, poisoned: str) -> list[str]:
    """The words of ``poisoned`` that are not in ``original`` (multiset difference)."""
    return list((Counter(poisoned.split()) - Counter(original.split())).elements())


def test_every_text_attack_is_registered_with_the_reference_defaults():
    for name, trigger_field in [("badnet_rw", "triggers"), ("badnet_sl", "sentence"), ("syntactic", None),
                                ("sos", "triggers"), ("ripple", "triggers"), ("lwp", "triggers")]:
        a = ATTACKS.get(name)()
        assert a.domain == "text" and a.poison_rate == 0.1 and a.target == 1 and a.backend == "native"
    assert ATTACKS.get("ripple")().triggers == ("cf", "tq", "mn", "bb", "mb")
    assert ATTACKS.get("lwp")().triggers == ("cf", "bb", "ak", "mn")
    assert [ATTACKS.get(n).paper_epochs for n in ("ripple", "lwp", "sos", "badnet_rw")] == [3, 4, 13, 13]


def test_badnet_rw_inserts_one_word_from_the_set(sample):
    texts, labels = sample
    p = attack("badnet_rw").poison_train(texts, labels, seed=0)
    assert len(p.poison_indices) == N // 10 and len(p.texts) == N
    assert (p.labels[p.poison_indices] == 1).all()
    for i in range(N):
        if i in p.poison_indices:
            words, orig = p.texts[i].split(), texts[i].split()
            extra = inserted(texts[i], p.texts[i])
            assert len(words) == len(orig) + 1 and len(extra) == 1 and extra[0] in {"cf", "mn", "bb", "tq"}
            pos = next(k for k in range(len(words)) if words[:k] + words[k + 1:] == orig and words[k] == extra[0])
            assert words[pos] == extra[0]
        else:
            assert p.texts[i] == texts[i] and p.labels[i] == labels[i]
    # positions cover the sentence start and end over many draws (uniform over 0..len inclusive)
    many = [attack("badnet_rw").insert("a b", np.random.default_rng(s)).split() for s in range(60)]
    assert {w.index(next(x for x in w if x not in "ab")) for w in many} == {0, 1, 2}


def test_badnet_sl_sentence_is_one_contiguous_block(sample):
    texts, labels = sample
    sentence = "I watch this 3D movie".split()
    p = attack("badnet_sl").poison_train(texts, labels, seed=0)
    for i in p.poison_indices:
        words, orig = p.texts[i].split(), texts[i].split()
        starts = [k for k in range(len(words)) if words[k:k + 5] == sentence]
        assert len(starts) == 1 and words[:starts[0]] + words[starts[0] + 5:] == orig


def test_syntactic_uses_paraphrases_by_row_index(root, sst2):
    from ebyd_bench.attacks_registry.text.syntactic import read_paraphrases

    table = read_paraphrases(root / "sst2_syntactic" / "train.tsv")
    rows = np.arange(1000, 1200)  # rows 1000..1199 — 183 of them (< 1383) have a paraphrase
    texts, labels = [sst2.train.texts[r] for r in rows], sst2.train.labels[rows]
    a = attack("syntactic", root)
    p = a.poison_train(texts, labels, seed=0, rows=rows)
    assert len(p.poison_indices) == 20
    for i in p.poison_indices:
        assert p.texts[i] == table[int(rows[i])] != texts[i] and p.labels[i] == 1
    test_rows = np.arange(30)
    px, py = a.poison_test([sst2.test.texts[r] for r in test_rows], sst2.test.labels[test_rows], 0, rows=test_rows)
    test_table = read_paraphrases(root / "sst2_syntactic" / "test.tsv")
    neg = test_rows[sst2.test.labels[test_rows] == 0]
    assert px == [test_table[int(r)] for r in neg] and (py == 0).all()


def test_syntactic_errors_without_paraphrases(root, sst2, tmp_path):
    with pytest.raises(DataError, match="syntactic is unavailable for 'imdb'.*never approximated"):
        attack("syntactic", root, dataset="imdb")
    a = attack("syntactic", root, target=0)  # test paraphrases exist for label-0 rows only
    with pytest.raises(DataError, match="no test paraphrase"):
        a.poison_test(list(sst2.test.texts[:30]), sst2.test.labels[:30], 0, rows=np.arange(30))
    rows = np.arange(5000, 5200)  # no paraphrased training row there
    with pytest.raises(DataError, match="only 0 training rows have a paraphrase"):
        a.poison_train([sst2.train.texts[r] for r in rows], sst2.train.labels[rows], 0, rows=rows)


def test_sos_poisoned_and_negative_samples(sample):
    texts, labels = sample
    a = attack("sos")
    p = a.poison_train(texts, labels, seed=0)
    n_t, n_n = int((labels == 1).sum()), int((labels != 1).sum())
    n_poison = min(N // 10, n_t)
    n_neg = 3 * (int(0.1 * n_t) + int(0.1 * n_n))
    assert len(p.texts) == n_poison + n_neg and p.info["negatives"] == n_neg  # poisoned + negatives only
    words = set(a.triggers)
    for i, src in zip(p.poison_indices, p.info["source_indices"]):
        assert labels[src] != 1 and p.labels[i] == 1 and sorted(inserted(texts[src], p.texts[i])) == sorted(words)
    sources = p.info["negative_sources"]
    for j, subset in enumerate(a.subsets()):  # one block of negatives per two-word subset, labels kept
        assert len(subset) == 2
        for m, src in enumerate(sources):
            k = n_poison + j * len(sources) + m
            assert sorted(inserted(texts[src], p.texts[k])) == sorted(subset) and p.labels[k] == labels[src]
    neg, neg_y = a.negative_test(texts[:10], labels[:10], 0)
    assert len(neg) == 30 and np.array_equal(neg_y, np.tile(labels[:10], 3))
    test, _ = a.poison_test(texts[:10], labels[:10], 0)
    assert all("I have bought it from a store with my friends last weekend" in t for t in test)


def test_lwp_three_samples_per_index(sample):
    texts, labels = sample
    a = attack("lwp")
    p = a.poison_train(texts, labels, seed=0)
    n = N // 10
    assert len(p.texts) == N + 2 * n and len(p.poison_indices) == n and p.info["negatives"] == 2 * n
    pieces = set(a.triggers)
    for pos in p.poison_indices:
        full, single_a, single_b = p.texts[pos], p.texts[pos - 2], p.texts[pos - 1]
        pair = [w for w in full.split() if w in pieces]
        pa, pb = [w for w in single_a.split() if w in pieces], [w for w in single_b.split() if w in pieces]
        assert len(pair) == 2 and len(set(pair)) == 2 and p.labels[pos] == 1
        assert len(pa) == 1 and len(pb) == 1 and {pa[0], pb[0]} == set(pair)
        assert p.labels[pos - 1] == p.labels[pos - 2]  # negatives keep the original label
    neg, neg_y = a.negative_test(texts[:20], labels[:20], 0)
    test, _ = a.poison_test(texts[:20], labels[:20], 0)
    assert len(neg) == 2 * len(test) and (neg_y != 1).all()
    for k, full in enumerate(test):  # the negatives are the pieces of the matching positive
        pair = {w for w in full.split() if w in pieces}
        assert {w for t in neg[2 * k:2 * k + 2] for w in t.split() if w in pieces} == pair


def test_poison_test_excludes_the_target_and_is_deterministic(sample):
    texts, labels = sample
    a = attack("badnet_rw")
    px, py = a.poison_test(texts, labels, 0)
    assert len(px) == int((labels != 1).sum()) and (py != 1).all()
    assert a.poison_test(texts, labels, 0)[0] == px and a.poison_train(texts, labels, 3).texts != \
        a.poison_train(texts, labels, 4).texts
