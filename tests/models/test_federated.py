"""Federated state: what travels, strict loading, serialized size."""

import pytest
import torch
from safetensors.torch import save

from deqfl.errors import ConfigError
from deqfl.models import build_model, federated_state, load_federated_state, serialized_bytes


def test_state_round_trip_gives_identical_outputs():
    torch.manual_seed(0)
    a = build_model("deq-mnist", (1, 8, 8)).eval()
    torch.manual_seed(1)
    b = build_model("deq-mnist", (1, 8, 8)).eval()
    x = torch.randn(4, 1, 8, 8)
    state = federated_state(a)
    assert list(state) == list(a.state_dict())  # ordered, nothing local in the default model
    assert all(not t.requires_grad for t in state.values())
    load_federated_state(b, state)
    assert torch.equal(a(x), b(x))
    state[next(iter(state))].add_(1.0)  # copies, not views
    assert torch.equal(a(x), b(x))


def test_loading_is_strict():
    model = build_model("cnn-small")
    state = federated_state(model)
    missing = dict(list(state.items())[1:])
    extra = {**state, "bogus": torch.zeros(1)}
    key = next(iter(state))
    wrong = {**state, key: torch.zeros(3)}
    before = federated_state(model)
    for bad in (missing, extra, wrong):
        with pytest.raises(ConfigError):
            load_federated_state(model, bad)
    assert all(torch.equal(before[k], v) for k, v in federated_state(model).items())


def test_serialized_bytes_is_the_safetensors_size():
    model = build_model("resnet-small")
    assert serialized_bytes(model) == len(save(federated_state(model)))
    assert serialized_bytes(model) > 4 * sum(p.numel() for p in model.parameters())
