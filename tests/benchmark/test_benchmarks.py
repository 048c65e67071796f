"""Speed benchmarks (pytest-benchmark). CI runs each once as a smoke test (``--benchmark-disable``);
``pytest tests/benchmark/test_benchmarks.py --benchmark-enable`` measures them. Nothing here asserts a time."""

import numpy as np
import torch
import torch.nn.functional as F

from ebyd_bench.benchmark.models.resnet_cifar import resnet18_narrow
from ebyd_bench.benchmark.tensors import augment, normalize, to_unit
from ebyd_bench.benchmark.training import predict


def _batch(n=128):
    return np.random.default_rng(0).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def test_augment_batch(benchmark):
    x = to_unit(_batch())
    gen = torch.Generator().manual_seed(0)
    out = benchmark(augment, x, gen)
    assert out.shape == x.shape


def test_narrow_resnet_train_step(benchmark):
    torch.manual_seed(0)
    model = resnet18_narrow().to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = normalize(to_unit(_batch())).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    assert np.isfinite(benchmark(step))


def test_narrow_resnet_predict_512(benchmark):
    model = resnet18_narrow().eval()
    preds = benchmark(predict, model, _batch(512))
    assert preds.shape == (512,)
