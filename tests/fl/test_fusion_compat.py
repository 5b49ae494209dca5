"""Capability flags, the allowed combinations, their generated doc, and config errors of
the server optimisers."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from deqfl.errors import ConfigError
from deqfl.experiments.config import load_config
from deqfl.fl.fusion import Aggregate, FusionConfig, register_aggregator
from deqfl.fl.fusion.aggregator.ops import weighted_sum
from deqfl.fl.fusion.matrix import BEGIN, END, render_matrix
from deqfl.fl.fusion.registry import AGGREGATORS, OPTIMIZERS, WEIGHTINGS

ROOT = Path(__file__).resolve().parents[2]
HALF_WIDTH = "fleet.tiers=[{name='strong', share=0.5}, {name='weak', share=0.5, width=0.5}]"
BUILTIN_WEIGHTINGS = ["examples", "quality", "uniform"]
BUILTIN_AGGREGATORS = ["fednova", "heterofl", "krum", "mean", "median", "multi-krum", "trimmed-mean"]
BUILTIN_OPTIMIZERS = ["fedadagrad", "fedadam", "fedavgm", "fedyogi", "sgd"]


def accepted(overrides: list[str]) -> bool:
    try:
        load_config(None, overrides)
    except ConfigError:
        return False
    return True


def documented_combinations() -> dict[tuple[str, bool], tuple[set[str], set[str], set[str]]]:
    """(privacy.mode, sliced) -> (weightings, aggregators, optimisers) from docs/FUSION.md."""
    text = (ROOT / "docs" / "FUSION.md").read_text()
    block = text[text.index(BEGIN) : text.index(END)]
    rows = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 5 and cells[0] in ("off", "central", "local"):
            sets = [set() if c == "refused" else set(c.split(", ")) for c in cells[2:]]
            rows[(cells[0], cells[1] == "yes")] = tuple(sets)
    return rows


def test_the_matrix_doc_is_generated_from_the_flags():
    text = (ROOT / "docs" / "FUSION.md").read_text()
    assert render_matrix() in text, "run: python -m deqfl.fl.fusion.matrix --write docs/FUSION.md"


def test_the_documented_combinations_are_exactly_what_the_config_accepts():
    rows = documented_combinations()
    assert len(rows) == 6
    for (mode, sliced), (weightings, aggregators, optimizers) in rows.items():
        base = [f"privacy.mode={mode}"] + ([HALF_WIDTH] if sliced else [])
        for w, a in itertools.product(BUILTIN_WEIGHTINGS, BUILTIN_AGGREGATORS):
            ok = accepted(base + [f"fusion.weighting={w}", f"fusion.aggregator={a}"])
            assert ok == (w in weightings and a in aggregators), (mode, sliced, w, a)
        if weightings:  # every documented optimiser with an allowed rule
            rule = [f"fusion.weighting={sorted(weightings)[0]}", f"fusion.aggregator={sorted(aggregators)[0]}"]
            assert optimizers == set(BUILTIN_OPTIMIZERS)
            for o in BUILTIN_OPTIMIZERS:
                assert accepted(base + rule + [f"fusion.server_optimizer={o}"]), (mode, sliced, o)


def test_flags_of_the_builtin_rules():
    assert WEIGHTINGS.having("central_dp") == ["uniform"] == WEIGHTINGS.having("local_dp")
    assert AGGREGATORS.having("central_dp") == ["mean"]
    assert AGGREGATORS.having("local_dp") == ["mean", "median", "trimmed-mean", "krum", "multi-krum"]
    assert AGGREGATORS.having("handles_coverage") == ["heterofl"]
    stateful = sorted(o for o in OPTIMIZERS.having("stateful") if o in BUILTIN_OPTIMIZERS)
    assert stateful == ["fedadagrad", "fedadam", "fedavgm", "fedyogi"]
    assert not OPTIMIZERS.flags("sgd").stateful


def test_capability_errors_are_clear_config_errors():
    with pytest.raises(ConfigError, match=r"privacy.mode='central'.*aggregator in \(mean\).*got weighting='uniform', aggregator='median'"):
        load_config(None, ["privacy.mode=central", "fusion.weighting=uniform", "fusion.aggregator=median"])
    with pytest.raises(ConfigError, match=r"flagged local_dp.*got weighting='examples'"):
        load_config(None, ["privacy.mode=local", "fusion.weighting=examples"])
    with pytest.raises(ConfigError, match=r"fleet.tiers 'weak'.*needs fusion.aggregator = 'heterofl'.*got 'median'"):
        load_config(None, [HALF_WIDTH, "fusion.aggregator=median"])


def test_a_user_rule_is_refused_under_dp_until_it_declares_the_flag():
    @register_aggregator("test-unflagged-mean")
    def unflagged(updates, weights, config):
        return Aggregate(delta=weighted_sum([u.delta for u in updates], weights))

    @register_aggregator("test-local-dp-mean", local_dp=True)
    def flagged(updates, weights, config):
        return Aggregate(delta=weighted_sum([u.delta for u in updates], weights))

    local = ["privacy.mode=local", "fusion.weighting=uniform"]
    assert accepted(["fusion.aggregator=test-unflagged-mean"])
    assert not accepted(local + ["fusion.aggregator=test-unflagged-mean"])
    assert accepted(local + ["fusion.aggregator=test-local-dp-mean"])
    assert not accepted(local[:1] + ["privacy.mode=central", "fusion.weighting=uniform", "fusion.aggregator=test-local-dp-mean"])
    assert "test-local-dp-mean" not in render_matrix()  # the doc lists what deqfl ships


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"server_optimizer": "adam"}, "fusion.server_optimizer: Value error, server_optimizer: unknown choice 'adam'; valid choices: fedadagrad, fedadam"),
        ({"server_optimizer": "fedadam", "server_optimizer_options": {"beta_1": 1.5}}, "server_optimizer_options.beta_1: Input should be less than 1"),
        ({"server_optimizer": "fedadam", "server_optimizer_options": {"momentum": 0.9}}, "server_optimizer_options.momentum: Extra inputs are not permitted"),
        ({"server_optimizer": "fedyogi", "server_optimizer_options": {"tau": 0}}, "server_optimizer_options.tau: Input should be greater than 0"),
        ({"server_optimizer": "fedavgm", "server_optimizer_options": {"lr": float("nan")}}, "server_optimizer_options.lr"),
        ({"server_optimizer": "fedyogi", "server_lr": 0.5}, "server_lr=0.5 applies to server_optimizer='sgd' only; set fusion.server_optimizer_options.lr"),
        ({"server_optimizer_options": {"lr": 0.5}}, "'sgd' takes no options (its step size is fusion.server_lr)"),
    ],
)
def test_bad_server_optimizer_config_is_a_config_error_naming_the_key(data, fragment):
    with pytest.raises(ConfigError, match="invalid fusion config") as info:
        FusionConfig.from_mapping(data)
    assert fragment in str(info.value)


def test_server_optimizer_from_the_command_line_and_round_trip(tmp_path):
    c = load_config(None, ["fusion.server_optimizer=fedadam", "fusion.server_optimizer_options.lr=0.03",
                           "fusion.server_optimizer_options.bias_correction=false"])
    options = c.fusion.optimizer_options()
    assert (options.lr, options.beta_1, options.bias_correction) == (0.03, 0.9, False)
    path = tmp_path / "c.toml"
    path.write_text(c.to_toml())
    assert load_config(path) == c
    with pytest.raises(ConfigError, match=r"fusion.*server_optimizer_options.beta_2: Input should be less than 1"):
        load_config(None, ["fusion.server_optimizer=fedyogi", "fusion.server_optimizer_options={beta_2=1.0}"])


def test_server_lr_stays_the_sgd_step_and_keeps_old_configs_valid():
    c = load_config(None, ["fusion.server_lr=0.25"])
    assert c.fusion.server_optimizer == "sgd" and c.fusion.optimizer_options().lr == 0.25
    assert "server_optimizer_options" not in c.fusion.model_fields_set
