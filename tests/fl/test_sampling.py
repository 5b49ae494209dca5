import pytest

from deqfl.errors import ConfigError
from deqfl.fl.profiles import TierConfig
from deqfl.fl.sampling import sample_round

STRONG = TierConfig(name="strong", share=0.5, max_iter=16)
WEAK = TierConfig(name="weak", share=0.5, max_iter=4)
FLAKY = TierConfig(name="flaky", share=0.5, max_iter=4, availability=0.0)


def test_sampling_is_seeded_sorted_and_sized():
    tiers = [STRONG, WEAK] * 10
    a = sample_round(tiers, seed=3, round_number=1, fraction=0.5, min_clients=2)
    assert a == sample_round(tiers, seed=3, round_number=1, fraction=0.5, min_clients=2)
    assert a != sample_round(tiers, seed=3, round_number=2, fraction=0.5, min_clients=2)
    assert a.selected == sorted(a.selected) and len(a.selected) == 10
    assert len(sample_round(tiers, 0, 1, fraction=0.05, min_clients=4).selected) == 4


def test_drop_weak_never_samples_weak_tiers():
    tiers = [STRONG, WEAK] * 10
    for r in range(1, 6):
        s = sample_round(tiers, 0, r, fraction=1.0, min_clients=1, rule="drop-weak", min_cap=16)
        assert s.selected and all(tiers[c] is STRONG for c in s.selected)
    with pytest.raises(ConfigError, match="no eligible client"):
        sample_round([WEAK] * 3, 0, 1, 1.0, 1, rule="drop-weak", min_cap=16)


def test_unavailable_clients_are_reported_not_selected():
    tiers = [STRONG, FLAKY] * 5
    s = sample_round(tiers, 0, 1, fraction=1.0, min_clients=1)
    assert s.unavailable == [1, 3, 5, 7, 9]
    assert s.selected == [0, 2, 4, 6, 8]
