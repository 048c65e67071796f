"""A grid's model parameters are checked against the model factory when the config is loaded: a bad
one is one line naming the setting, exit code 2, and nothing written (no OUT folder, no cache)."""

from __future__ import annotations

import pytest
import torch

from ebyd_bench.benchmark.specs import ModelFactory
from ebyd_bench.cli import main

IMAGE = "configs/quick.yaml"
TEXT = "configs/quick-text.yaml"

BAD = [
    (IMAGE, "model.params.widht=16", "unknown parameter 'widht'; did you mean 'width'?"),
    (IMAGE, "model.params.width=0", "parameter 'width': Input should be greater than or equal to 8"),
    (IMAGE, "model.params.width=4", "parameter 'width': Input should be greater than or equal to 8"),
    (IMAGE, "model.params.width=abc", "parameter 'width': Input should be a valid integer"),
    (IMAGE, "model.params.width=[16]", "parameter 'width': Input should be a valid integer"),
    (IMAGE, "model.params.width=16.5", "parameter 'width': Input should be a valid integer"),
    (IMAGE, "model.params.width=null", "parameter 'width': Input should be a valid integer"),
    (IMAGE, "model.params.num_classes=3", "unknown parameter 'num_classes'"),
    (IMAGE, "model.params.norm_layer=layernorm", "unknown parameter 'norm_layer'"),
    (IMAGE, "model.params=[1, 2]", "model.params: Input should be a valid dictionary"),
    (IMAGE, "model.name=resnet19", "unknown models 'resnet19'; did you mean 'resnet18'"),
    (IMAGE, "model.name=minilm-l6", "model 'minilm-l6' is for text data but dataset 'cifar10' is image"),
    (TEXT, "model.params.max_length=0", "parameter 'max_length': Input should be greater than or equal to 1"),
    (TEXT, "model.params.pretrained=maybe", "parameter 'pretrained': Input should be a valid boolean"),
    (TEXT, "model.name=hf-text", "model 'hf-text': missing parameter(s) path"),
]


@pytest.mark.parametrize("config, setting, message", BAD, ids=[b[1] for b in BAD])
def test_bad_model_setting_exits_2_with_one_line_and_writes_nothing(config, setting, message, tmp_path, capsys,
                                                                    text_root):
    out, cache = tmp_path / "out", tmp_path / "cache"
    code = main(["run", config, "--out", str(out), "--cache-dir", str(cache), "--data-root", str(text_root),
                 "--set", setting])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not out.exists() and not cache.exists()


def test_model_factory_coerces_and_builds():
    factory = ModelFactory.checked("resnet18_narrow", {"width": "8"})
    assert factory.params == {"width": 8}
    model = factory(num_classes=3).eval()
    assert tuple(model(torch.zeros(2, 3, 32, 32)).shape) == (2, 3)
