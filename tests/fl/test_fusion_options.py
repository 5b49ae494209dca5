"""Each weighting's and aggregator's own typed options: checked by the chosen entry's
model, delivered to the entry, kept canonical; the old flat keys map into them."""

from __future__ import annotations

import pytest
import torch
from pydantic import Field, ValidationError

from deqfl.errors import ConfigError
from deqfl.fl.fusion import (
    Aggregate,
    ClientUpdate,
    Fusion,
    FusionConfig,
    FusionContext,
    RuleOptions,
    Weights,
    register_aggregator,
    register_weighting,
)
from deqfl.fl.fusion.aggregator.krum import KrumOptions
from deqfl.fl.fusion.aggregator.multi_krum import MultiKrumOptions
from deqfl.fl.fusion.aggregator.trimmed_mean import TrimmedMeanOptions
from deqfl.fl.fusion.registry import AGGREGATORS, WEIGHTINGS
from deqfl.fl.fusion.weighting.quality import QualityOptions

CTX = FusionContext(round=1, reference_cap=16)


def scalar_updates(values, caps=None) -> list[ClientUpdate]:
    """Client i+1 moves the scalar x = 0 to values[i] (1 example, forward cap caps[i])."""
    caps = caps or [16] * len(values)
    return [
        ClientUpdate(i + 1, "t", {"x": torch.tensor([float(v)], dtype=torch.float64)}, 1, 1, caps[i], None, None)
        for i, v in enumerate(values)
    ]


def fused_x(config: FusionConfig, values, caps=None) -> float:
    g = {"x": torch.zeros(1, dtype=torch.float64)}
    return Fusion(config).fuse(g, scalar_updates(values, caps), CTX).state["x"].item()


def test_each_builtin_entry_declares_its_options_model():
    assert WEIGHTINGS.options("quality") is QualityOptions
    assert AGGREGATORS.options("trimmed-mean") is TrimmedMeanOptions
    assert AGGREGATORS.options("krum") is KrumOptions
    assert AGGREGATORS.options("multi-krum") is MultiKrumOptions
    for name in ("examples", "uniform"):
        assert WEIGHTINGS.options(name).model_fields == {}
    for name in ("mean", "median", "fednova", "heterofl"):
        assert AGGREGATORS.options(name).model_fields == {}


def test_the_chosen_entries_receive_their_typed_options():
    fusion = Fusion(FusionConfig(weighting_options={"source": "loss"}, aggregator="multi-krum",
                                 aggregator_options={"byzantine": 2, "select": 3}))
    assert fusion.weighting_options == QualityOptions(source="loss")
    assert fusion.aggregator_options == MultiKrumOptions(byzantine=2, select=3)
    assert Fusion(FusionConfig(aggregator="trimmed-mean")).aggregator_options == TrimmedMeanOptions(trim_fraction=0.1)


def test_options_change_what_the_entry_computes():
    values = [100, 1, 2, 3, -50]
    trimmed = FusionConfig(weighting="examples", aggregator="trimmed-mean", max_norm_factor=None,
                           aggregator_options={"trim_fraction": 0.2})
    assert fused_x(trimmed, values) == pytest.approx(2.0)  # drops 100 and -50: mean(1, 2, 3)
    untrimmed = trimmed.model_copy(update={"aggregator_options": {"trim_fraction": 0.0}})
    assert fused_x(untrimmed, values) == pytest.approx(56 / 5)
    # multi-krum, f = 1, K = 5: scores 3.25, 1.25, 2.5, 6.25, huge; select = 2 keeps 1 and 1.5
    krum = FusionConfig(weighting="examples", aggregator="multi-krum", max_norm_factor=None,
                        aggregator_options={"byzantine": 1, "select": 2})
    assert fused_x(krum, [0, 1, 1.5, 3, 50]) == pytest.approx(1.25)
    # quality from the budget: caps 16 and 4 of reference 16 -> q = 1, 1/4 -> x = (1*1 + 0.25*0) / 1.25
    budget = FusionConfig(weighting_options={"source": "budget"}, max_norm_factor=None)
    residual = FusionConfig(max_norm_factor=None)
    assert fused_x(budget, [1, 0], caps=[16, 4]) == pytest.approx(0.8)
    assert fused_x(residual, [1, 0], caps=[16, 4]) == pytest.approx(0.5)  # no residuals: q = 1/2 each


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"weighting_options": {"source": "speed"}}, "fusion.weighting_options.source: Input should be"),
        ({"weighting_options": {"sorce": "loss"}}, "fusion.weighting_options.sorce: unknown option (weighting 'quality' takes options: source)"),
        ({"weighting": "examples", "weighting_options": {"source": "loss"}}, "weighting 'examples' takes options: none"),
        ({"aggregator": "trimmed-mean", "aggregator_options": {"trim_fraction": 0.5}}, "fusion.aggregator_options.trim_fraction: Input should be less than 0.5"),
        ({"aggregator": "mean", "aggregator_options": {"trim_fraction": 0.2}}, "fusion.aggregator_options.trim_fraction: unknown option (aggregator 'mean' takes options: none)"),
        ({"aggregator": "krum", "aggregator_options": {"byzantine": -1}}, "fusion.aggregator_options.byzantine: Input should be greater than or equal to 0"),
        ({"aggregator": "krum", "aggregator_options": {"select": 2}}, "aggregator 'krum' takes options: byzantine"),
        ({"aggregator": "multi-krum", "aggregator_options": {"select": 0}}, "fusion.aggregator_options.select"),
        ({"aggregator": "multi-krum", "aggregator_options": {"byzantine": float("nan")}}, "fusion.aggregator_options.byzantine"),
        ({"aggregator_options": [1]}, "fusion.aggregator_options"),
        ({"quality": "speed"}, "fusion.quality: Input should be"),
        ({"krum_select": 0}, "fusion.krum_select: Input should be greater than or equal to 1"),
        ({"krum_byzantine": "x"}, "fusion.krum_byzantine"),
        ({"quality": "loss", "weighting_options": {"source": "budget"}}, "give fusion.weighting_options.source or its old name fusion.quality, not both"),
        ({"aggregator": "trimmed-mean", "trim_fraction": 0.2, "aggregator_options": {"trim_fraction": 0.2}}, "give fusion.aggregator_options.trim_fraction or its old name fusion.trim_fraction"),
        ({"aggregator": "multi-krum", "krum_select": 2, "aggregator_options": {"select": 3}}, "old name fusion.krum_select, not both"),
    ],
)
def test_bad_options_are_a_config_error_naming_the_key(data, fragment):
    with pytest.raises(ConfigError, match="invalid fusion config") as info:
        FusionConfig.from_mapping(data)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"quality": "budget"}, {"weighting_options": {"source": "budget"}}),
        ({"aggregator": "trimmed-mean", "trim_fraction": 0.3}, {"aggregator": "trimmed-mean", "aggregator_options": {"trim_fraction": 0.3}}),
        ({"aggregator": "krum", "krum_byzantine": 2, "krum_select": 4}, {"aggregator": "krum", "aggregator_options": {"byzantine": 2}}),
        ({"aggregator": "multi-krum", "krum_byzantine": 0, "krum_select": 4}, {"aggregator": "multi-krum", "aggregator_options": {"byzantine": 0, "select": 4}}),
        # an old key of a rule not chosen is checked, then ignored (it never had an effect there)
        ({"weighting": "examples", "quality": "loss", "trim_fraction": 0.4, "krum_byzantine": 3}, {"weighting": "examples"}),
    ],
)
def test_old_flat_keys_land_in_the_chosen_entrys_options(old, new):
    assert FusionConfig.from_mapping(old) == FusionConfig.from_mapping(new)
    assert FusionConfig(**old) == FusionConfig(**new)


def test_options_are_kept_canonical():
    """Only values that differ from the entry's defaults are kept, so spelling out a
    default (as every stored config.toml does with the old keys) changes nothing."""
    spelled = FusionConfig(quality="residual", trim_fraction=0.1, krum_byzantine=1, weighting_options={})
    assert spelled == FusionConfig() and spelled.weighting_options == {} and spelled.aggregator_options == {}
    assert FusionConfig(aggregator="multi-krum", aggregator_options={"byzantine": 1, "select": None}) == FusionConfig(aggregator="multi-krum")
    assert FusionConfig(aggregator="krum", aggregator_options={"byzantine": 3}).model_dump()["aggregator_options"] == {"byzantine": 3}
    assert "trim_fraction" not in FusionConfig(trim_fraction=0.2).model_dump()


def test_typed_options_are_frozen_and_strict():
    options = FusionConfig(aggregator="trimmed-mean", trim_fraction=0.2).aggregator_params()
    assert options == TrimmedMeanOptions(trim_fraction=0.2)
    with pytest.raises(ValidationError):
        options.trim_fraction = 0.3  # type: ignore[misc]


def test_a_user_rule_gets_its_own_options_or_none():
    seen: list[RuleOptions] = []

    class PowerOptions(RuleOptions):
        power: float = Field(1.0, ge=0, description="Exponent.")

    @register_weighting("test-power", options=PowerOptions)
    def power(updates, ctx, options):
        seen.append(options)
        return Weights(scores=[float(u.num_examples) ** options.power for u in updates], quality=[1.0] * len(updates))

    @register_aggregator("test-plain-sum")
    def plain_sum(updates, weights, options):
        seen.append(options)
        return Aggregate(delta={k: sum(u.delta[k] for u in updates) for k in updates[0].delta})

    config = FusionConfig(weighting="test-power", weighting_options={"power": 2}, aggregator="test-plain-sum",
                          max_norm_factor=None)
    assert fused_x(config, [1, 2]) == pytest.approx(3.0)
    assert seen == [PowerOptions(power=2.0), RuleOptions()]
    with pytest.raises(ConfigError, match=r"fusion.weighting_options.power: Input should be greater than or equal to 0"):
        FusionConfig.from_mapping({"weighting": "test-power", "weighting_options": {"power": -1}})
    with pytest.raises(ConfigError, match=r"aggregator 'test-plain-sum' takes options: none"):
        FusionConfig.from_mapping({"aggregator": "test-plain-sum", "aggregator_options": {"power": 1}})
    with pytest.raises(TypeError, match="RuleOptions subclass"):
        register_weighting("test-bad-options", options=dict)(power)  # type: ignore[arg-type]


def _pin_state():
    return {"w": torch.linspace(-1, 1, 6).reshape(2, 3), "b": torch.tensor([0.5, -0.25, 0.125])}


def _pin_update(cid, scale, shift, cap, loss):
    base = _pin_state()
    state = {"w": base["w"] * scale + shift, "b": base["b"] - shift}
    return ClientUpdate(client_id=cid, tier="t", state=state, num_examples=10 + cid, local_steps=1 + cid,
                        forward_cap=cap, residual=0.01 * (cid + 1), holdout_loss=loss, momentum=0.0)


PIN_UPDATES = [_pin_update(1, 1.3, 0.2, 16, 0.5), _pin_update(2, 0.7, -0.4, 4, 1.5), _pin_update(3, 5.0, 2.0, 8, 0.25),
               _pin_update(4, 1.1, 0.1, 12, 0.9)]
PINNED = [  # (old flat keys, new table, state as float.hex printed by the code before rules had options)
    ({"quality": "budget"}, {"weighting_options": {"source": "budget"}}, {"w": ["-0x1.76ea860000000p+0", "-0x1.5e78e60000000p-1", "0x1.871a1e0000000p-4", "0x1.c03f6c0000000p-1", "0x1.a7cdca0000000p+0", "0x1.37bdf00000000p+1"], "b": ["0x1.dbaa260000000p-7", "-0x1.7891580000000p-1", "-0x1.7122b00000000p-2"]}),
    ({"quality": "loss"}, {"weighting_options": {"source": "loss"}}, {"w": ["-0x1.c72d860000000p+0", "-0x1.880ac80000000p-1", "0x1.f916020000000p-3", "0x1.424ae20000000p+0", "0x1.22b9840000000p+1", "0x1.a44d940000000p+1"], "b": ["-0x1.02db460000000p-2", "-0x1.00b6d20000000p+0", "-0x1.416da40000000p-1"]}),
    ({"aggregator": "krum", "krum_byzantine": 0}, {"aggregator": "krum", "aggregator_options": {"byzantine": 0}}, {"w": ["-0x1.0000000000000p+0", "-0x1.1eb8520000000p-1", "-0x1.eb851e0000000p-4", "0x1.47ae140000000p-2", "0x1.851eba0000000p-1", "0x1.3333340000000p+0"], "b": ["0x1.99999a0000000p-2", "-0x1.6666660000000p-2", "0x1.9999980000000p-6"]}),
    ({"aggregator": "multi-krum", "krum_byzantine": 1, "krum_select": 2}, {"aggregator": "multi-krum", "aggregator_options": {"byzantine": 1, "select": 2}}, {"w": ["-0x1.0e09e80000000p+0", "-0x1.2455e40000000p-1", "-0x1.64bf900000000p-4", "0x1.964bf80000000p-2", "0x1.c2e3ee0000000p-1", "0x1.5d50ee0000000p+0"], "b": ["0x1.6171f60000000p-2", "-0x1.9e8e0a0000000p-2", "-0x1.e8e0a20000000p-6"]}),
    ({"aggregator": "trimmed-mean", "trim_fraction": 0.3}, {"aggregator": "trimmed-mean", "aggregator_options": {"trim_fraction": 0.3}}, {"w": ["-0x1.1999980000000p+0", "-0x1.63f1420000000p-1", "-0x1.64bf900000000p-4", "0x1.964bf80000000p-2", "0x1.c2e3ee0000000p-1", "0x1.5d50ee0000000p+0"], "b": ["0x1.6171f60000000p-2", "-0x1.9e8e0a0000000p-2", "-0x1.e8e0a20000000p-6"]}),
]


@pytest.mark.parametrize(("old", "new", "expected"), PINNED)
def test_results_are_bitwise_those_of_the_flat_keys(old, new, expected):
    """Stored runs reproduce: either spelling gives the old code's fused model, bit for bit."""
    ctx = FusionContext(round=3, reference_cap=16)
    for spelling in (old, new):
        state = Fusion(FusionConfig(max_norm_factor=None, **spelling)).fuse(_pin_state(), PIN_UPDATES, ctx).state
        assert {k: [float(x).hex() for x in v.reshape(-1).tolist()] for k, v in state.items()} == expected
