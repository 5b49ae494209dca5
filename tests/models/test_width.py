"""HeteroFL width slicing: sub-model shapes, the leading-slice layout, embedding, compute."""

from __future__ import annotations

import pytest
import torch

from deqfl.errors import ConfigError
from deqfl.fl.intake import embed_sliced
from deqfl.fl.update import ClientUpdate
from deqfl.models import build_model, federated_state, load_federated_state
from deqfl.models.explicit import ScaledReLU
from deqfl.models.width import (
    check_nested,
    embed_state,
    multiply_accumulates,
    narrow_model,
    slice_state,
    sub_shapes,
)


@pytest.mark.parametrize(("name", "shape"), [("cnn-small", (1, 28, 28)), ("cnn-large", (3, 32, 32))])
@pytest.mark.parametrize("ratio", [0.5, 0.3])
def test_sub_model_is_the_full_model_with_its_other_channels_zeroed(name, shape, ratio):
    """The sub-model's tensors are the leading slices of the full model's: zeroing every
    entry outside the slices makes the full model compute exactly what the sub-model does."""
    torch.manual_seed(0)
    full = build_model(name, shape)
    sub = narrow_model(full, ratio)
    shapes = sub_shapes(sub)
    check_nested(shapes, federated_state(full))
    zeroed = {}
    for key, value in federated_state(full).items():
        mask = torch.zeros_like(value)
        mask[tuple(slice(0, n) for n in shapes[key])] = 1
        zeroed[key] = value * mask
    load_federated_state(full, zeroed)
    load_federated_state(sub, slice_state(zeroed, shapes))
    x = torch.randn(5, *shape)
    full.eval(), sub.eval()
    torch.testing.assert_close(sub(x), full(x))
    assert shapes["net.0.weight"][0] < federated_state(full)["net.0.weight"].shape[0]


def test_slicing_then_embedding_gives_back_the_global_state():
    full = build_model("cnn-small")
    state = federated_state(full)
    shapes = sub_shapes(narrow_model(full, 0.5))
    assert all(torch.equal(a, b) for a, b in zip(embed_state(slice_state(state, shapes), state).values(), state.values()))


def test_multiply_accumulates_of_cnn_small_by_hand():
    conv1 = 28 * 28 * 16 * (1 * 9)
    conv2 = 14 * 14 * 32 * (16 * 9)
    head = 10 * 32 * 7 * 7
    full = build_model("cnn-small")
    assert multiply_accumulates(full, (1, 28, 28)) == conv1 + conv2 + head
    half = multiply_accumulates(narrow_model(full, 0.5), (1, 28, 28))
    assert half == 28 * 28 * 8 * 9 + 14 * 14 * 16 * (8 * 9) + 10 * 16 * 7 * 7  # 28% of the full


def test_a_deq_cannot_be_width_sliced():
    with pytest.raises(ConfigError, match="cannot be width-sliced"):
        narrow_model(build_model("deq-mnist"), 0.5)
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        narrow_model(build_model("cnn-small"), 0.0)


def test_scaler_divides_by_the_rate_only_in_training():
    scaler, x = ScaledReLU(0.5), torch.tensor([-1.0, 2.0])
    assert torch.equal(scaler.train()(x), torch.tensor([0.0, 4.0]))
    assert torch.equal(scaler.eval()(x), torch.tensor([0.0, 2.0]))


def _reply(state):
    return ClientUpdate(client_id=1, tier="weak", state=state, num_examples=5, local_steps=1,
                        forward_cap=0, residual=None, holdout_loss=None)


def test_server_embeds_a_sliced_reply_and_rejects_other_shapes():
    full = build_model("cnn-small")
    global_state = federated_state(full)
    shapes = sub_shapes(narrow_model(full, 0.5))
    sub_global = slice_state(global_state, shapes)
    trained = {k: v + 1 for k, v in sub_global.items()}
    embedded = embed_sliced(_reply(trained), global_state, sub_global)
    assert embedded.coverage == shapes
    for key, value in embedded.state.items():
        assert value.shape == global_state[key].shape
        region = tuple(slice(0, n) for n in shapes[key])
        assert torch.equal(value[region], trained[key])
        outside = torch.ones_like(value, dtype=torch.bool)
        outside[region] = False
        assert torch.equal(value[outside], global_state[key][outside])
    with pytest.raises(ValueError, match="not the tier's sub-model: shape mismatch"):
        embed_sliced(_reply(global_state), global_state, sub_global)  # a full model from a narrow tier
    with pytest.raises(ValueError, match="dtype mismatch"):
        embed_sliced(_reply({k: v.double() for k, v in trained.items()}), global_state, sub_global)
