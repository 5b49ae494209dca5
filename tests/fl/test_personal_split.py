"""The model split (which entries are shared, which personal, FedBN's norms), what stays
off the wire per algorithm, each client's test split, and the [personalization] config."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from deqfl.errors import ConfigError
from deqfl.experiments.config import load_config
from deqfl.experiments.run_dir import run_config_hash
from deqfl.fl.personal.mod import complete_download, local_keys
from deqfl.fl.personal.split import split_model
from deqfl.fl.personal.test_split import class_quota, client_test_rows
from deqfl.fl.personal.unseen import unseen_clients
from deqfl.models import build_model, federated_state


def _model(name):
    return build_model(name, input_shape=(1, 28, 28), num_classes=10)


def test_deq_classifier_shares_stem_and_cell_and_keeps_its_head():
    split = split_model(_model("deq-mnist"))
    assert split.personal == ("head.0.bias", "head.0.weight", "head.3.bias", "head.3.weight")
    assert all(k.startswith(("stem.", "deq.")) for k in split.shared) and any(k.startswith("deq.cell") for k in split.shared)
    assert set(split.shared) | set(split.personal) == set(federated_state(_model("deq-mnist")))


def test_explicit_models_keep_their_final_classifier():
    assert split_model(_model("cnn-small")).personal == ("net.7.bias", "net.7.weight")  # the last Linear
    assert split_model(_model("resnet-small")).personal == ("head.2.bias", "head.2.weight")


def test_fedbn_keeps_the_normalisation_layers_local():
    resnet = split_model(_model("resnet-small"), "head+norm").personal
    assert "stem.1.weight" in resnet and "blocks.0.norm1.bias" in resnet and "head.2.weight" in resnet
    assert not any("conv" in k for k in resnet)
    norm_only = split_model(_model("resnet-small"), "norm").personal
    assert "head.2.weight" not in norm_only and "blocks.1.shortcut.1.weight" in norm_only
    deq = split_model(_model("deq-mnist"), "head+norm").personal
    assert "stem.1.weight" in deq and not any(k.startswith("deq.") for k in deq)
    with pytest.raises(ConfigError, match="selects no parameter"):
        split_model(_model("cnn-small"), "norm")  # the CNN has no normalisation layer


def test_a_model_declares_its_personal_modules():
    class Declared(nn.Module):
        personal_modules = ("b",)

        def __init__(self):
            super().__init__()
            self.a, self.b, self.head = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)

    assert split_model(Declared()).personal == ("b.bias", "b.weight")
    with pytest.raises(ConfigError, match="declares no personal part"):
        split_model(nn.Sequential(nn.Conv2d(1, 1, 3)))


def test_what_stays_off_the_wire_per_algorithm():
    split = split_model(_model("deq-mnist"))
    assert local_keys("fedavg", split) == local_keys("ditto", split) == local_keys("fedavg-ft", split) == ()
    assert local_keys("fedper", split) == local_keys("fedrep", split) == local_keys("fedeq", split) == split.personal
    assert set(local_keys("local", split)) == set(split.shared) | set(split.personal)


def test_complete_download_fills_only_the_local_entries():
    import torch  # noqa: PLC0415

    from deqfl.fl.client.task import PersonalTask  # noqa: PLC0415

    initial = {"a": torch.zeros(1), "h": torch.ones(1)}
    task = PersonalTask("fedper", {}, ("h",), ("h",), 10)
    assert complete_download({"a": torch.full((1,), 2.0)}, initial, task) == {"a": torch.full((1,), 2.0), "h": initial["h"]}
    assert complete_download({"a": initial["a"]}, initial, None) == {"a": initial["a"]}  # not personalised: as received


def test_client_test_split_follows_the_training_labels():
    y_test = np.repeat(np.arange(10), 50)
    train = np.array([3] * 30 + [7] * 10)
    assert class_quota(train, 10, 20).tolist() == [0, 0, 0, 15, 0, 0, 0, 5, 0, 0]
    assert class_quota(np.array([0, 1, 2]), 3, 4).tolist() == [2, 1, 1]  # largest remainder, ties to the smaller class
    rows = client_test_rows(y_test, train, 20, seed=0, client_id=4)
    assert sorted(np.bincount(y_test[rows], minlength=10).tolist()) == sorted([15, 5] + [0] * 8)
    assert np.bincount(y_test[rows], minlength=10)[3] == 15
    assert np.array_equal(rows, client_test_rows(y_test, train, 20, seed=0, client_id=4))  # deterministic
    assert not np.array_equal(rows, client_test_rows(y_test, train, 20, seed=0, client_id=5))
    assert len(client_test_rows(y_test, np.array([1] * 5), 80, 0, 0)) == 50  # a class has only 50 test rows


def test_config_options_are_typed_per_algorithm_and_canonical():
    base = ["personalization.algorithm=fedeq"]
    spelled = load_config(None, base + ["personalization.options={rho=0.01, head_epochs=2}"])
    assert spelled.personalization.options == {"head_epochs": 2}
    assert run_config_hash(spelled) == run_config_hash(load_config(None, base + ["personalization.options={head_epochs=2}"]))
    assert run_config_hash(load_config(None, [])) == run_config_hash(load_config(None, ["personalization.algorithm=none"]))
    with pytest.raises(ConfigError, match=r"options.rh.*takes options: rho, dual_step, head_epochs"):
        load_config(None, base + ["personalization.options={rh=1.0}"])
    with pytest.raises(ConfigError, match="rho"):
        load_config(None, base + ["personalization.options={rho=-1.0}"])
    with pytest.raises(ConfigError, match="algorithm is 'none'"):
        load_config(None, ["personalization.options={rho=1.0}"])
    with pytest.raises(ConfigError, match="valid choices: none, ditto"):
        load_config(None, ["personalization.algorithm=perfedavg"])


def test_config_refuses_what_personalisation_does_not_support():
    with pytest.raises(ConfigError, match="not supported with fusion.control_variates"):
        load_config(None, ["personalization.algorithm=fedper", 'fusion.control_variates="scaffold"'])
    with pytest.raises(ConfigError, match="unseen_fraction = 0.2 needs a personalization.algorithm"):
        load_config(None, ["personalization.unseen_fraction=0.2"])
    with pytest.raises(ConfigError, match="at least one"):
        load_config(None, ["personalization.algorithm=fedper", "personalization.unseen_fraction=0.01", "data.num_clients=4"])


def test_unseen_clients_are_a_seeded_share():
    held = unseen_clients(20, 0.25, seed=0)
    assert len(held) == 5 and held == sorted(set(held)) and held == unseen_clients(20, 0.25, seed=0)
    assert unseen_clients(20, 0.25, seed=1) != held and unseen_clients(20, 0.02, seed=0) == []
