"""Registry: every model builds for every sensible input, sizes are as documented."""

import pytest
import torch
from torch import nn

from deqfl.deq import DEQ, IFT, SolverConfig
from deqfl.errors import ConfigError
from deqfl.models import build_model, default_input_shape, find_deq, list_models, parameter_count, register_model

NAMES = ["deq-mnist", "deq-cifar", "cnn-small", "cnn-large", "resnet-small", "resnet-large", "unrolled-mnist", "unrolled-cifar"]


def test_every_documented_model_is_registered():
    assert set(NAMES) <= set(list_models())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape,classes", [((1, 8, 8), 10), ((1, 28, 28), 10), ((3, 32, 32), 7)])
def test_builds_and_classifies(name, shape, classes):
    torch.manual_seed(0)
    model = build_model(name, shape, classes).eval()
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, classes) and bool(torch.isfinite(out).all())
    assert (find_deq(model) is not None) == name.startswith("deq")


def test_sizes():
    assert parameter_count(build_model("deq-mnist")) == 7436  # DESIGN 6b: ~7.5K
    assert 160_000 <= parameter_count(build_model("deq-cifar")) <= 180_000
    assert parameter_count(build_model("cnn-small")) == 20490
    deq_cell = sum(p.numel() for p in find_deq(build_model("deq-mnist")).cell.parameters())
    twin = parameter_count(build_model("unrolled-mnist"))
    assert twin == parameter_count(build_model("deq-mnist")) + 15 * deq_cell
    assert default_input_shape("deq-cifar") == (3, 32, 32)


def test_deq_options():
    model = build_model("deq-mnist", backward="ift", backward_options={"max_iter": 12}, solver={"max_iter": 8, "method": "broyden"})
    deq = find_deq(model)
    assert isinstance(deq, DEQ) and deq.backward == IFT(max_iter=12)
    assert deq.train_solver == SolverConfig(method="broyden", max_iter=8) == deq.eval_solver


@pytest.mark.parametrize(
    "name,shape,options",
    [("no-such-model", None, {}), ("cnn-small", None, {"width": 3}), ("deq-mnist", None, {"solver": {"tol": -1}}),
     ("deq-mnist", None, {"backward": "nope"}), ("deq-mnist", None, {"solver": {"memory": 3}}), ("cnn-small", (28, 28), {})],
)
def test_bad_requests_are_config_errors(name, shape, options):
    with pytest.raises(ConfigError):
        build_model(name, shape, **options)


def test_register_a_user_model():
    @register_model("test-linear")
    def linear(input_shape, num_classes, hidden=4):
        c, h, w = input_shape
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.Linear(hidden, num_classes))

    assert "test-linear" in list_models()
    assert parameter_count(build_model("test-linear", (1, 2, 2), 3, hidden=2)) == 8 + 2 + 6 + 3
    with pytest.raises(ConfigError):
        register_model("test-linear")(linear)


@pytest.mark.parametrize("shape", [(3, 16, 28, 28), (2, 4, 15, 17)])
def test_fast_max_pool_matches_torch_bit_for_bit_with_ties(shape):
    from deqfl.models.stems import MaxPool2x2

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=generator)
    x[:, :, : shape[2] // 2] = 0.25  # tied windows (an image's flat background), where argmax must agree
    grad = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2, generator=generator)
    outputs, grads = [], []
    for pool in (nn.MaxPool2d(2), MaxPool2x2()):
        leaf = x.clone().requires_grad_()
        out = pool(leaf)
        out.backward(grad)
        outputs.append(out)
        grads.append(leaf.grad)
        with torch.no_grad():
            assert torch.equal(pool(x), outputs[0])
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(grads[0], grads[1])
    assert outputs[1].is_contiguous()
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        MaxPool2x2()(torch.randn(4, 8, 8))
