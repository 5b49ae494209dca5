"""The client's optimiser (`train.optimizer`) and batch augmentation (`data.augment`) in
local training, on scikit-learn digits: sgd is torch's SGD as before, Adam trains and
starts afresh every round, and augmentation is drawn from its own (seed, round, client)
generator without touching the batch order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from deqfl.data import DatasetArrays
from deqfl.data.augment import black_pixel, crop_flip
from deqfl.errors import ConfigError
from deqfl.fl.client import ClientData, ClientTask, TrainOptions, client_generator, train_client
from deqfl.fl.client.optimizers import (
    ClientOptimizerOptions,
    canonical_options,
    client_optimizer_names,
    make_client_optimizer,
    register_client_optimizer,
)
from deqfl.fl.client.optimizers import base as optimizers_base
from deqfl.fl.client.train import _AUGMENT_TAG
from deqfl.fl.profiles import TierConfig
from deqfl.models import build_model, federated_state, load_federated_state

STEPS = 4


@pytest.fixture(scope="module")
def dataset():
    digits = load_digits()
    x = (digits.images * 255 / 16).astype(np.uint8)[:, None]
    y = digits.target.astype(np.int64)
    return DatasetArrays("digits", x[:300], y[:300], x[300:400], y[300:400], tuple(str(c) for c in range(10)))


def options(**changes) -> TrainOptions:
    base = dict(lr=0.05, momentum=0.9, weight_decay=1e-3, batch_size=8, proximal_mu=0.0, residual_samples=8)
    return TrainOptions(**{**base, **changes})


def task(round_: int = 1, steps: int = STEPS, **changes) -> ClientTask:
    tier = TierConfig(name="t", share=1.0, local_steps=steps)
    return ClientTask(round=round_, seed=3, tier=tier, forward_cap=6, reference_cap=6, reference_tol=1e-3,
                      options=options(**changes))


def client(cid: int = 0) -> ClientData:
    return ClientData(cid, np.arange(40 * cid, 40 * cid + 32), np.arange(40 * cid + 32, 40 * cid + 40))


def model():
    torch.manual_seed(0)
    return build_model("deq-mnist", (1, 8, 8), channels=4)


def equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sgd_is_torch_sgd_with_the_flat_keys():
    params = [torch.nn.Parameter(torch.ones(3))]
    built = make_client_optimizer(params, options())
    plain = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-3)
    assert type(built) is torch.optim.SGD and built.defaults == plain.defaults


def test_adam_and_adamw_take_their_typed_options():
    params = [torch.nn.Parameter(torch.ones(3))]
    adam = make_client_optimizer(params, options(optimizer="adam", optimizer_options={"beta_1": 0.8, "eps": 1e-6}))
    assert type(adam) is torch.optim.Adam
    assert adam.defaults["betas"] == (0.8, 0.999) and adam.defaults["eps"] == 1e-6
    assert adam.defaults["lr"] == 0.05 and adam.defaults["weight_decay"] == 1e-3
    adamw = make_client_optimizer(params, options(optimizer="adamw"))
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["weight_decay"] == 1e-3
    assert {"sgd", "adam", "adamw"} <= set(client_optimizer_names())


def test_bad_options_name_the_key_and_what_the_optimiser_takes():
    with pytest.raises(ValueError, match=r"train\.optimizer_options\.beta3: unknown option \(optimizer 'adam' takes options: beta_1, beta_2, eps\)"):
        canonical_options("adam", {"beta3": 0.5})
    with pytest.raises(ValueError, match=r"train\.optimizer_options\.beta_2: .*less than 1"):
        canonical_options("adam", {"beta_2": 1.0})
    with pytest.raises(ValueError, match="optimizer 'sgd' takes options: none"):
        canonical_options("sgd", {"beta_1": 0.9})
    with pytest.raises(ConfigError, match="valid choices: adam, adamw, sgd"):
        canonical_options("lion", {})
    assert canonical_options("adam", {"beta_1": 0.9, "eps": 1e-6}) == {"eps": 1e-6}  # defaults dropped


def _loss(state, dataset, rows):
    m = model()
    load_federated_state(m, state)
    m.eval()
    x = dataset.normalise(dataset.x_train[rows])
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(m(x), torch.as_tensor(dataset.y_train[rows])))


def test_adam_trains_and_differs_from_sgd(dataset):
    start = federated_state(model())
    adam = train_client(model(), start, task(steps=30, optimizer="adam", lr=0.01), dataset, client())
    sgd = train_client(model(), start, task(steps=30), dataset, client())
    rows = client().train_indices
    assert _loss(adam.state, dataset, rows) < 0.5 * _loss(start, dataset, rows)
    assert not equal(adam.state, sgd.state)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_no_optimiser_state_carries_over_to_the_next_round(dataset, name):
    """Round 2 trained on the model object that just trained round 1 equals round 2
    trained on a fresh model: momentum buffers and Adam's moments start at zero."""
    reused = model()
    first = train_client(reused, federated_state(reused), task(1, optimizer=name), dataset, client())
    again = train_client(reused, first.state, task(2, optimizer=name), dataset, client())
    fresh = train_client(model(), first.state, task(2, optimizer=name), dataset, client())
    assert equal(again.state, fresh.state) and not equal(again.state, first.state)


def test_a_registered_optimiser_is_used_by_name(dataset, monkeypatch):
    monkeypatch.setattr(optimizers_base, "_OPTIMIZERS", dict(optimizers_base._OPTIMIZERS))  # undone after the test

    class NoOptions(ClientOptimizerOptions):
        pass

    seen = []

    @register_client_optimizer("test-frozen", options=NoOptions, replace=True)
    def frozen(params, options, typed):
        seen.append(options.lr)
        return torch.optim.SGD(params, lr=0.0)

    start = federated_state(model())
    update = train_client(model(), start, task(optimizer="test-frozen", lr=0.125), dataset, client())
    assert seen == [0.125] and equal(update.state, start)


def _training_inputs(dataset, task_, cid=0):
    """The inputs of every training forward pass of the client's round."""
    m, inputs = model(), []
    m.register_forward_pre_hook(lambda module, args: inputs.append(args[0].clone()) if module.training else None)
    train_client(m, federated_state(m), task_, dataset, client(cid))
    return inputs


def test_augmentation_is_drawn_from_its_own_client_generator(dataset):
    """With crop-flip each training batch is crop_flip(the batch without augmentation) with
    draws from the (seed, round, client, augment tag) generator in step order: the batch
    order is untouched, and the same (seed, round, client) gives the same batches."""
    on_task = task(augment="crop-flip")
    plain = _training_inputs(dataset, task())
    augmented = _training_inputs(dataset, on_task)
    assert len(plain) == len(augmented) == STEPS
    generator, fill = client_generator(on_task, 0, _AUGMENT_TAG), black_pixel(dataset)
    for batch, seen in zip(plain, augmented):
        assert torch.equal(seen, crop_flip(batch, fill, generator))
    assert any(not torch.equal(a, b) for a, b in zip(plain, augmented))
    assert all(torch.equal(a, b) for a, b in zip(augmented, _training_inputs(dataset, on_task)))


def test_augmentation_differs_by_client_and_round(dataset):
    batch = dataset.normalise(dataset.x_train[:32])
    fill = black_pixel(dataset)

    def draw(task_, cid):
        return crop_flip(batch, fill, client_generator(task_, cid, _AUGMENT_TAG))

    on = task(augment="crop-flip")
    assert torch.equal(draw(on, 0), draw(on, 0))
    assert not torch.equal(draw(on, 0), draw(on, 1))
    assert not torch.equal(draw(on, 0), draw(task(2, augment="crop-flip"), 0))
