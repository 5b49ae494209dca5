"""Attacks through the real path (tamper -> encode -> decode -> validate -> fuse), no training.

Targets checked here: with 30% of the clients sending NaN, Inf, wrong-shape or huge-norm
updates the global model stays finite and equal to the fusion of the honest updates; the
lies about example counts and residuals are bounded; every culprit is named."""

from __future__ import annotations

import math

import pytest
import torch

from deqfl.experiments.config import load_config
from deqfl.fl.attacks import AttackConfig, attack_generator, flip_labels, malicious_clients, tamper_update
from deqfl.fl.fusion import ClientUpdate, Fusion, FusionConfig, FusionContext
from deqfl.fl.transport import decode_state, encode_state

GLOBAL = {
    "w": torch.linspace(-1, 1, 12).reshape(3, 4),
    "b": torch.zeros(4),
    "steps": torch.tensor(7),
}
CORRUPTING = [
    AttackConfig(kind="inject-nan"),
    AttackConfig(kind="inject-inf"),
    AttackConfig(kind="wrong-shape"),
    AttackConfig(kind="scale", scale=1e4),
]


def honest(client: int) -> ClientUpdate:
    g = torch.Generator().manual_seed(client)
    state = {k: (v + 0.01 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone())
             for k, v in GLOBAL.items()}
    return ClientUpdate(client_id=client, tier="strong", state=state, num_examples=100, local_steps=5,
                        forward_cap=16, residual=0.01 * (1 + client), holdout_loss=0.5)


def over_the_wire(update: ClientUpdate, dtype: str = "float32") -> ClientUpdate:
    """What the server decodes: the engine's encode_state / decode_state round trip."""
    update.state = decode_state(encode_state(update.state, dtype), like=GLOBAL)
    return update


def round_of(attack: AttackConfig | None, bad: set[int], n: int = 10, dtype: str = "float32"):
    updates = []
    for c in range(n):
        u = honest(c)
        if c in bad and attack is not None:
            u = tamper_update(u, GLOBAL, attack, attack_generator(0, 1, c))
        updates.append(over_the_wire(u, dtype))
    return updates


CTX = FusionContext(round=1, reference_cap=16, known_num_examples={c: 100 for c in range(10)})


@pytest.mark.parametrize("attack", CORRUPTING, ids=lambda a: f"{a.kind}-{a.scale:g}")
@pytest.mark.parametrize("aggregator", ["mean", "median", "trimmed-mean", "multi-krum"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_30_percent_corrupting_clients_never_corrupt_the_model(attack, aggregator, dtype):
    bad = {2, 5, 7}
    fusion = Fusion(FusionConfig(aggregator=aggregator, weighting="examples"))
    attacked = fusion.fuse(GLOBAL, round_of(attack, bad, dtype=dtype), CTX)
    clean = fusion.fuse(GLOBAL, [u for u in round_of(None, set(), dtype=dtype) if u.client_id not in bad], CTX)
    assert not attacked.skipped
    assert sorted(r["client"] for r in attacked.rejected) == sorted(bad)
    assert all(r["reason"] for r in attacked.rejected)
    for key, value in attacked.state.items():
        assert torch.isfinite(value.double()).all()
        assert torch.equal(value, clean.state[key])


def test_rejection_reasons_name_the_defect():
    reasons = {}
    for attack in CORRUPTING:
        result = Fusion(FusionConfig()).fuse(GLOBAL, round_of(attack, {3}), CTX)
        reasons[attack.kind + str(attack.scale)] = result.rejected[0]["reason"]
    assert "non-finite" in reasons["inject-nan10.0"] and "non-finite" in reasons["inject-inf10.0"]
    assert "shape mismatch" in reasons["wrong-shape10.0"]
    assert "median norm" in reasons["scale10000.0"]


def test_sign_flip_and_scale_send_the_update_they_claim():
    u = honest(1)
    delta = u.state["w"] - GLOBAL["w"]
    flipped = tamper_update(u, GLOBAL, AttackConfig(kind="sign-flip", flip_scale=2.0), attack_generator(0, 1, 1))
    scaled = tamper_update(u, GLOBAL, AttackConfig(kind="scale", scale=3.0), attack_generator(0, 1, 1))
    assert torch.allclose(flipped.state["w"] - GLOBAL["w"], -2 * delta, atol=1e-6)
    assert torch.allclose(scaled.state["w"] - GLOBAL["w"], 3 * delta, atol=1e-6)
    assert torch.equal(flipped.state["steps"], GLOBAL["steps"])
    assert torch.equal(u.state["w"], GLOBAL["w"] + delta)  # the honest update is not modified


def test_gaussian_attack_is_seeded_by_seed_round_and_client():
    attack = AttackConfig(kind="gaussian", noise_std=0.5)
    a = tamper_update(honest(1), GLOBAL, attack, attack_generator(0, 1, 1)).state["w"]
    b = tamper_update(honest(1), GLOBAL, attack, attack_generator(0, 1, 1)).state["w"]
    c = tamper_update(honest(1), GLOBAL, attack, attack_generator(0, 2, 1)).state["w"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert 0.3 < float((a - GLOBAL["w"]).std()) < 0.8


def test_lies_about_examples_and_residual_are_bounded():
    fusion = Fusion(FusionConfig(weighting="quality", quality="residual"))
    inflate = AttackConfig(kind="inflate-examples", lie_with="honest")
    result = fusion.fuse(GLOBAL, round_of(inflate, {4}), CTX)
    honest_weights = fusion.fuse(GLOBAL, round_of(None, set()), CTX).weights
    assert result.weights == honest_weights  # the count is capped at the known partition size
    assert {"client": 4, "field": "num_examples", "reported": 10**9, "used": 100} in result.adjusted

    tiny = AttackConfig(kind="tiny-residual", lie_with="honest")
    result = fusion.fuse(GLOBAL, round_of(tiny, {4}), CTX)
    assert any(a["client"] == 4 and a["field"] == "residual" and a["used"] == 1e-6 for a in result.adjusted)
    # q <= 1 whatever the claim: the liar at most doubles its share relative to a median client
    assert result.quality[4] <= 1.0 and result.weights[4] <= 2.0 * sorted(result.weights.values())[5]


def test_malicious_choice_is_seeded_and_sized():
    config = AttackConfig(kind="sign-flip", fraction=0.3)
    chosen = malicious_clients(config, 20, seed=3)
    assert chosen == malicious_clients(config, 20, seed=3) == sorted(chosen)
    assert len(chosen) == 6 and chosen != malicious_clients(config, 20, seed=4)
    assert malicious_clients(AttackConfig(kind="scale", clients=[5, 1, 5]), 20, 0) == [1, 5]
    assert malicious_clients(AttackConfig(kind="none", fraction=0.5), 20, 0) == []


def test_label_flip_maps_every_class_to_another():
    y = torch.arange(10)
    assert torch.equal(flip_labels(y, 10), torch.arange(9, -1, -1))


def test_wrong_shape_and_nan_survive_the_wire():
    for kind, check in [("wrong-shape", lambda s: s["w"].shape == (4, 4)),
                        ("inject-nan", lambda s: bool(torch.isnan(s["w"]).any()))]:
        u = over_the_wire(tamper_update(honest(0), GLOBAL, AttackConfig(kind=kind), attack_generator(0, 1, 0)), "float16")
        assert check(u.state)


def test_attack_config_keys_are_checked():
    config = load_config(None, ["attack.kind=sign-flip", "attack.fraction=0.2", "data.num_clients=10"])
    assert config.attack.active and math.isclose(config.attack.fraction, 0.2)
    for bad, message in [("attack.kind=teleport", "attack.kind"), ("attack.fraction=1.5", "attack.fraction"),
                         ("attack.clients=[10]", "attack.clients"), ("attack.bogus=1", "unknown key")]:
        with pytest.raises(Exception, match=message):
            load_config(None, ["data.num_clients=10", bad])
