import pytest

from deqfl.errors import ConfigError
from deqfl.fl.clock import cap_for_time_budget, device_seconds, planned_deq_units, transfer_seconds
from deqfl.fl.profiles import TierConfig, assign_tiers, largest_remainder, list_presets, load_preset, reference_tier


def tier(name, **kw):
    kw.setdefault("share", 0.5)
    return TierConfig(name=name, **kw)


def test_largest_remainder_sums_to_total_and_favours_big_remainders():
    assert largest_remainder([0.3, 0.4, 0.3], 20) == [6, 8, 6]
    assert largest_remainder([0.3, 0.4, 0.3], 7) == [2, 3, 2]
    assert largest_remainder([1 / 3] * 3, 10) == [4, 3, 3]
    assert sum(largest_remainder([0.15, 0.35, 0.5], 13)) == 13


def test_assign_tiers_by_share_is_seeded_and_exact():
    tiers = load_preset("three-tiers")
    a = assign_tiers(20, tiers, seed=0)
    b = assign_tiers(20, tiers, seed=0)
    c = assign_tiers(20, tiers, seed=1)
    names = [t.name for t in a]
    assert names == [t.name for t in b]
    assert names != [t.name for t in c]
    assert names.count("strong") == 6 and names.count("medium") == 8 and names.count("weak") == 6


def test_explicit_client_lists_take_precedence():
    tiers = [TierConfig(name="gpu", clients=[0, 3]), TierConfig(name="rest", share=1.0, max_iter=4)]
    names = [t.name for t in assign_tiers(5, tiers, seed=0)]
    assert names[0] == names[3] == "gpu"
    assert names.count("rest") == 3


def test_malformed_tiers_fail_clearly():
    with pytest.raises(ConfigError, match="shares must sum to 1"):
        assign_tiers(10, [tier("a", share=0.5), tier("b", share=0.3)], seed=0)
    with pytest.raises(ConfigError, match="unique"):
        assign_tiers(10, [tier("a"), tier("a")], seed=0)
    with pytest.raises(ConfigError, match="outside"):
        assign_tiers(3, [TierConfig(name="a", clients=[5])], seed=0)
    with pytest.raises(ConfigError, match="belong to no tier"):
        assign_tiers(3, [TierConfig(name="a", clients=[0])], seed=0)
    with pytest.raises(ValueError, match="exactly one of"):
        TierConfig(name="a")
    with pytest.raises(ValueError):
        TierConfig(name="a", share=1.0, max_iter=0)
    with pytest.raises(ValueError):
        TierConfig(name="a", share=1.0, bogus=1)


def test_presets_ship_and_parse():
    assert {"homogeneous", "two-tiers", "three-tiers", "extreme-spread"} <= set(list_presets())
    for name in list_presets():
        tiers = load_preset(name)
        assert abs(sum(t.share for t in tiers) - 1) < 1e-9
    assert reference_tier(load_preset("three-tiers")).forward_cap == 16
    with pytest.raises(ConfigError, match="valid choices"):
        load_preset("nope")


def test_clock_formula():
    t = tier("a", speed=1e-3, bandwidth_mbps=8.0)
    assert transfer_seconds(1_000_000, 8.0) == pytest.approx(1.0)
    assert device_seconds(t, 1000, 500_000, 500_000) == pytest.approx(1.0 + 1.0)


def test_time_budget_picks_the_largest_cap_that_fits():
    t = tier("a", speed=1e-4, bandwidth_mbps=1000.0, time_budget=1.0, backward="jfb")
    cap = cap_for_time_budget(t, samples=1000, residual_samples=0, reference_cap=16, bytes_down=0, bytes_up=0)
    # JFB step: cap solver evaluations + 1 forward + 1 vjp (2 units) per sample;
    # 1000 samples * (cap + 3) * 1e-4 <= 1.0  ->  cap <= 7
    assert cap == 7
    assert planned_deq_units(t, cap, 1000, 0, 16) * t.speed <= 1.0
    assert planned_deq_units(t, cap + 1, 1000, 0, 16) * t.speed > 1.0
    tiny = tier("b", speed=1.0, time_budget=1e-9)
    assert cap_for_time_budget(tiny, 10, 0, 16, 0, 0) == 1
