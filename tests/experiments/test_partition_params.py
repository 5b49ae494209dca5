"""The config's partition parameters reach the partitioner (`client_partition`)."""


import pytest

from deqfl.data import load_dataset
from deqfl.experiments.config import load_config
from deqfl.experiments.federation import client_partition


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return load_dataset("digits", cache_dir=tmp_path_factory.mktemp("cache"))


def _sizes(digits, *overrides):
    config = load_config(None, ["data.dataset=digits", "data.num_clients=8", *overrides])
    return [len(c.train_indices) + len(c.holdout_indices) for c in client_partition(config, digits)]


def test_quantity_skew_honours_alpha(digits):
    skewed = _sizes(digits, "data.partition=quantity-skew", "data.alpha=0.1")
    even = _sizes(digits, "data.partition=quantity-skew", "data.alpha=100.0")
    assert skewed != even
    assert sum(skewed) == sum(even) == len(digits.y_train)
    # a small alpha concentrates the surplus: the spread of client sizes is much wider
    assert max(skewed) - min(skewed) > 3 * (max(even) - min(even))


def test_quantity_skew_same_alpha_same_sizes(digits):
    a = _sizes(digits, "data.partition=quantity-skew", "data.alpha=0.3")
    b = _sizes(digits, "data.partition=quantity-skew", "data.alpha=0.3")
    assert a == b
    assert a != _sizes(digits, "data.partition=quantity-skew")  # default alpha 0.5 differs
