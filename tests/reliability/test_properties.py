"""Property-based tests (hypothesis) of the reliability layer: parsing of the [attack],
[faults] and [privacy] sections fails only with ConfigError, and no reply an engine hands
back (junk, duplicates, missing, malformed fields, hostile states) makes a server round
raise or leaves a non-finite global model."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deqfl.errors import ConfigError
from deqfl.experiments.config import load_config, validate_config
from deqfl.fl.attacks import AttackConfig
from deqfl.fl.client import ClientData, TrainOptions
from deqfl.fl.faults import FaultsConfig
from deqfl.fl.fusion import ClientUpdate, Fusion, FusionConfig
from deqfl.fl.privacy import PrivacyConfig
from deqfl.fl.profiles import TierConfig
from deqfl.fl.intake import upload_limit
from deqfl.fl.reply import MAX_TEXT, update_fields
from deqfl.fl.server import ClientReply, RoundSettings, run_round
from deqfl.fl.transport import encode_state

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

junk = st.one_of(
    st.none(), st.booleans(), st.text(max_size=6), st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True), st.lists(st.integers(-3, 30), max_size=4),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
SECTIONS = {
    "attack": sorted(AttackConfig.model_fields),
    "faults": sorted(FaultsConfig.model_fields),
    "privacy": sorted(PrivacyConfig.model_fields),
}


@st.composite
def section_values(draw):
    section = draw(st.sampled_from(sorted(SECTIONS)))
    keys = st.sampled_from(SECTIONS[section]) | st.text(min_size=1, max_size=4)
    plausible = {
        "kind": st.sampled_from(["none", "sign-flip", "inject-nan", "wrong-shape", "nope"]),
        "mode": st.sampled_from(["off", "central", "local", "on"]),
    }
    values = {}
    for key in draw(st.lists(keys, max_size=4)):
        values[key] = draw(plausible.get(key, junk))
    return section, values


@SETTINGS
@given(section_values(), st.sampled_from(["uniform", "quality"]), st.sampled_from(["mean", "median", "fednova"]))
def test_parsing_the_reliability_sections_fails_only_with_config_error(item, weighting, aggregator):
    section, values = item
    raw = {
        section: values, "data": {"num_clients": 10},
        "fusion": {"weighting": weighting, "aggregator": aggregator},
    }
    try:
        config = validate_config(raw)
    except ConfigError as exc:
        assert str(exc).startswith("invalid config")
        return
    assert all(0 <= c < 10 for c in (config.attack.clients or []) + config.faults.crash_clients)
    if config.privacy.mode == "central":
        assert (weighting, aggregator) == ("uniform", "mean")
    if config.privacy.mode == "local":
        assert weighting == "uniform" and aggregator in ("mean", "median")


def test_dp_with_a_rule_it_does_not_cover_names_the_allowed_rules():
    with pytest.raises(ConfigError, match=r"weighting in \(uniform\) and fusion.aggregator in \(mean\)"):
        load_config(None, ["privacy.mode=central", "fusion.weighting=quality"])
    with pytest.raises(ConfigError, match="median, trimmed-mean, krum, multi-krum"):
        load_config(None, ["privacy.mode=local", "fusion.weighting=uniform", "fusion.aggregator=fednova"])
    assert load_config(None, ["privacy.mode=local", "fusion.weighting=uniform", "fusion.aggregator=median"])


# --- the server round against any engine reply ---

N = 6
GLOBAL = {"w": torch.linspace(-1, 1, 6).reshape(2, 3), "b": torch.zeros(3), "n": torch.tensor(2)}
TIERS = [TierConfig(name="t", share=1.0, speed=1e-5)] * N
CLIENTS = [ClientData(c, np.arange(10 * c, 10 * c + 8), np.arange(10 * c + 8, 10 * c + 10)) for c in range(N)]
OPTIONS = TrainOptions(lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=4, proximal_mu=0.0, residual_samples=4)


@st.composite
def states(draw):
    kind = draw(st.sampled_from(["ok", "ok", "nan", "shape", "dtype", "junk", "huge"]))
    scale = draw(st.floats(-2, 2))
    state = {k: (v + scale * 0.1 if v.is_floating_point() else v.clone()) for k, v in GLOBAL.items()}
    if kind == "nan":
        state["w"] = state["w"].clone()
        state["w"][0, 0] = math.nan
    elif kind == "shape":
        state["b"] = torch.zeros(4)
    elif kind == "dtype":
        state["w"] = state["w"].double()
    elif kind == "huge":
        state["w"] = state["w"] * 1e30
    elif kind == "junk":
        return draw(junk)
    return state


def _payload(draw, state) -> bytes:
    """The encoded state, or bytes that are not one (junk, truncated, oversized)."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return draw(st.binary(max_size=64))
    payload = encode_state(state, draw(st.sampled_from(["float32", "float16"])))
    kind = draw(st.sampled_from(["ok", "ok", "ok", "truncated", "oversized"]))
    if kind == "truncated":
        return payload[: draw(st.integers(0, len(payload) - 1))]
    if kind == "oversized":
        return payload + b" " * upload_limit(GLOBAL)
    return payload


huge = st.sampled_from([10**400, -(10**400), 2**64, math.inf, -math.inf, math.nan, True])


@st.composite
def replies(draw, jobs):
    out = []
    for job in jobs:
        cid = job.data.client_id
        for _ in range(draw(st.sampled_from([1, 1, 1, 0, 2]))):
            kind = draw(st.sampled_from(["update", "update", "error", "junk-reply", "junk-fields"]))
            if kind == "error":
                out.append(ClientReply(cid, error=draw(st.text(max_size=8))))
                continue
            if kind == "junk-reply":
                out.append(ClientReply(cid, payload=draw(junk | st.binary(max_size=16)), fields=draw(junk)))
                continue
            fields = update_fields(ClientUpdate(
                client_id=cid, tier="t", state={}, num_examples=draw(st.integers(-5, 10**12)),
                local_steps=draw(st.integers(1, 5)), forward_cap=draw(st.integers(0, 16)),
                residual=draw(st.none() | st.floats(0, math.inf)), holdout_loss=None,
                metrics={"work_units": draw(st.floats(0, 1e6)), "train_loss": draw(junk)},
            ))
            fields["coverage"] = draw(st.none() | st.just({"w": (1, 1)}) | junk)  # the server's field, forged
            if kind == "junk-fields":
                names = ["client_id", "metrics", "tier", "num_examples", "local_steps", "momentum", "residual"]
                for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=3)):
                    fields[name] = draw(junk | huge)
            out.append(ClientReply(cid, payload=_payload(draw, draw(states())), fields=fields))
    if draw(st.booleans()):
        out.append(draw(junk))
    if draw(st.booleans()):
        out.append(ClientReply(99, error="stranger"))
    return draw(st.permutations(out))


class FakeEngine:
    """Replies drawn by hypothesis instead of trained clients."""

    def __init__(self, data):
        self.data = data

    def run_clients(self, jobs, download):
        return self.data.draw(replies(jobs))


round_settings = st.builds(
    RoundSettings,
    seed=st.integers(0, 5), fraction=st.sampled_from([0.3, 0.5, 1.0]), min_clients=st.integers(1, 3),
    rule=st.just("uniform"), min_forward_cap=st.just(1), deadline_seconds=st.none() | st.floats(1e-4, 10),
    transport_dtype=st.sampled_from(["float32", "float16"]), reference_cap=st.just(16),
    reference_tol=st.just(1e-3), options=st.just(OPTIONS),
    attack=st.none() | st.just(AttackConfig(kind="sign-flip", fraction=0.3)),
    malicious=st.sampled_from([(), (1, 3)]),
    faults=st.none() | st.just(FaultsConfig(straggler_clients=[2], straggler_slowdown=1e6)),
    privacy=st.none() | st.builds(PrivacyConfig, mode=st.sampled_from(["central", "local"]),
                                  clip_norm=st.floats(0.01, 10),
                                  noise_multiplier=st.sampled_from([0.0, 1e-300, 0.3, 1.0])),
)
fusions = st.builds(
    FusionConfig, weighting=st.sampled_from(["uniform", "examples", "quality"]),
    aggregator=st.sampled_from(["mean", "median", "trimmed-mean", "krum", "multi-krum", "fednova", "heterofl"]),
    min_updates=st.integers(1, 3),
)


@SETTINGS
@given(st.data(), round_settings, fusions)
def test_no_engine_reply_makes_the_round_raise(data, settings_, fusion_config):
    before = {k: v.clone() for k, v in GLOBAL.items()}
    outcome = run_round(3, dict(GLOBAL), CLIENTS, TIERS, settings_, FakeEngine(data), Fusion(fusion_config))
    for key, value in GLOBAL.items():
        assert torch.equal(value, before[key])
        assert outcome.state[key].shape == value.shape and outcome.state[key].dtype == value.dtype
        assert torch.isfinite(outcome.state[key].double()).all()
    record = outcome.record.to_json()
    assert all(isinstance(r["reason"], str) and 0 < len(r["reason"]) <= MAX_TEXT for r in record["rejected"])
    accepted = {c["id"] for c in record["clients"]}
    assert not accepted & {r["client"] for r in record["rejected"] if r["client"] is not None}
    if record["skipped"]:
        assert all(torch.equal(outcome.state[k], GLOBAL[k]) for k in GLOBAL)
    if settings_.privacy is not None:
        assert record["epsilon"] is not None and record["epsilon"] >= 0
    else:
        assert record["epsilon"] is None
    import json  # noqa: PLC0415

    from deqfl.experiments.results import json_safe  # noqa: PLC0415

    json.dumps(json_safe(record), allow_nan=False)  # the record can always be written


class ForgedCoverageEngine:
    """Every client returns the global model plus 1, claiming to have trained a slice only."""

    def run_clients(self, jobs, download):
        state = {k: v + 1 if v.is_floating_point() else v.clone() for k, v in GLOBAL.items()}
        replies = []
        for job in jobs:
            update = ClientUpdate(
                client_id=job.data.client_id, tier="t", state=state, num_examples=8, local_steps=2,
                forward_cap=0, residual=None, holdout_loss=None,
            )
            reply = ClientReply.from_update(update, "float32")
            replies.append(dataclasses.replace(reply, fields={**reply.fields, "coverage": {"w": [1, 1]}}))
        return replies


def test_a_client_cannot_set_its_own_coverage():
    settings_ = RoundSettings(seed=0, fraction=1.0, min_clients=1, rule="uniform", min_forward_cap=1, deadline_seconds=None,
                              transport_dtype="float32", reference_cap=16, reference_tol=1e-3, options=OPTIONS)
    fusion = Fusion(FusionConfig(weighting="examples", aggregator="heterofl"))
    outcome = run_round(1, dict(GLOBAL), CLIENTS, TIERS, settings_, ForgedCoverageEngine(), fusion)
    assert not outcome.record.rejected
    assert torch.allclose(outcome.state["w"], GLOBAL["w"] + 1) and torch.allclose(outcome.state["b"], GLOBAL["b"] + 1)
