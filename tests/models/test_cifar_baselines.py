"""The CIFAR baselines (He et al.'s ResNet-8/14/20, the CNN's widths): sizes, shortcuts, a
short training that learns; and one federated round of a multiscale DEQ on the embedded
engine."""

import json
import pickle

import pytest
import torch
from torch import nn

from deqfl.engines.spec import ModelSpec
from deqfl.errors import ConfigError
from deqfl.experiments.config import load_config
from deqfl.experiments.runner import run_experiment
from deqfl.models import build_model, default_input_shape, parameter_count
from deqfl.models.explicit import CifarBlock


def _count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("depth,params", [(8, 75_290), (14, 172_506), (20, 269_722)])
def test_cifar_resnets_have_6n_plus_2_layers_and_their_sizes(depth, params):
    model = build_model(f"resnet-{depth}")
    assert default_input_shape(f"resnet-{depth}") == (3, 32, 32)
    assert _count(model, nn.Conv2d) + _count(model, nn.Linear) == depth  # option-A shortcuts have no weights
    assert parameter_count(model) == params
    features = model.blocks(model.stem(torch.randn(2, 3, 32, 32)))
    assert features.shape == (2, 64, 8, 8)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_option_a_shortcut_subsamples_and_zero_pads():
    block = CifarBlock(16, 32, 2)
    x = torch.randn(1, 16, 8, 8)
    s = block.shortcut(x)
    assert s.shape == (1, 32, 4, 4)
    assert torch.equal(s[:, 8:24], x[:, :, ::2, ::2]) and not s[:, :8].any() and not s[:, 24:].any()


def test_resnet_widths_option():
    assert parameter_count(build_model("resnet-20", widths=(8, 16, 32))) < 80_000
    with pytest.raises(ConfigError, match="must not decrease"):
        build_model("resnet-8", widths=(32, 16))


@pytest.mark.parametrize("widths,params", [((8, 16), 11_642), ((16, 32), 25_578), ((32, 64), 60_362)])
def test_cnn_width_family_on_cifar(widths, params):
    w1, w2 = widths
    assert params == (27 * w1 + w1) + (9 * w1 * w2 + w2) + (w2 * 8 * 8 * 10 + 10)  # two convs, linear on 8x8 maps
    assert parameter_count(build_model("cnn-small", (3, 32, 32), widths=widths)) == params


@pytest.mark.parametrize("name,options", [("resnet-8", {"widths": (8, 16, 16)}), ("cnn-small", {"widths": (8, 16)})])
def test_explicit_cifar_baselines_learn_synthetic_cifar_shaped_images(name, options, train_on_synthetic_cifar):
    torch.manual_seed(0)
    model = build_model(name, (3, 32, 32), 10, **options)
    losses, test_accuracy = train_on_synthetic_cifar(model, noise=32.0)
    assert sum(losses[-4:]) / 4 < 0.9 * sum(losses[:4]) / 4
    assert test_accuracy >= 0.5  # chance: 0.1


def test_one_embedded_round_with_a_multiscale_deq(tmp_path):
    config = load_config(None, [
        "data.dataset=digits", "data.num_clients=3", "data.train_subset=300", "data.eval_subset=60",
        "experiment.rounds=1", "sampling.fraction=1.0", "train.batch_size=32", "train.residual_samples=16",
        "evaluation.anytime_every=1", "evaluation.anytime_budgets=[1, 4]",
        'model.name="mdeq-tiny-16"', 'model.options={channels = 4, solver = {max_iter = 6}}',
        f"data.cache_dir={json.dumps(str(tmp_path / 'cache'))}",
    ])
    summary = run_experiment(config, tmp_path / "run")
    assert summary["model"] == "mdeq-tiny-16" and summary["rounds"] == 1
    assert 0.0 <= summary["final_accuracy"] <= 1.0
    assert set(summary["anytime"]) == {"1", "4"}


@pytest.mark.parametrize("name,options", [("mdeq-small-8", {"channels": 4, "cell_options": {"pool": 2}}),
                                          ("resnet-8", {"widths": [8, 16, 16]})])
def test_a_worker_rebuilds_the_same_model_from_its_spec(name, options):
    spec = ModelSpec(name, (3, 32, 32), 10, options, seed=3)
    rebuilt = pickle.loads(pickle.dumps(spec)).build()
    torch.manual_seed(3)
    own = build_model(name, (3, 32, 32), 10, **options)
    assert list(rebuilt.state_dict()) == list(own.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), own.state_dict().values()))
