"""Client-level DP: clipping, noise, the accountant's epsilon, and a central-DP run."""

from __future__ import annotations

import math

import pytest
import torch

from deqfl.experiments.results import read_jsonl
from deqfl.fl.fusion import ClientUpdate, FusionConfig, FusionContext
from deqfl.fl.fusion import make_fusion as central_dp
from deqfl.fl.privacy import PrivacyConfig, epsilon, poisson_sample, privatize_local
from deqfl.fl.profiles import TierConfig

GLOBAL = {"w": torch.zeros(4, 5), "b": torch.zeros(5), "n": torch.tensor(1)}
CTX = FusionContext(round=2, reference_cap=16, known_num_examples={})
UNIFORM = FusionConfig(weighting="uniform", aggregator="mean")


def update(client: int, scale: float, nan: bool = False) -> ClientUpdate:
    w = torch.full((4, 5), scale)
    if nan:
        w[0, 0] = math.nan
    return ClientUpdate(client_id=client, tier="t", state={"w": w, "b": torch.zeros(5), "n": torch.tensor(1)},
                        num_examples=10, local_steps=1, forward_cap=16, residual=0.1, holdout_loss=None)


def test_central_step_clips_each_update_and_divides_by_the_fixed_sample_size():
    dp = PrivacyConfig(mode="central", clip_norm=1.0, noise_multiplier=0.0)
    updates = [update(0, 0.01), update(1, 10.0), update(2, 1.0, nan=True)]  # norms 0.045, 44.7, NaN
    result = central_dp(UNIFORM, dp, 4, 0).fuse(GLOBAL, updates, CTX)
    assert [r["client"] for r in result.rejected] == [2]
    expected = (torch.full((4, 5), 0.01) + torch.full((4, 5), 10.0) / math.sqrt(20) / 10.0) / 4
    assert torch.allclose(result.state["w"], expected, atol=1e-7)
    assert result.adjusted == [{"client": 1, "field": "update_norm", "reported": pytest.approx(math.sqrt(20) * 10), "used": 1.0}]
    assert result.weights == {0: 0.25, 1: 0.25} and not result.skipped


def test_central_noise_is_seeded_and_scaled_and_taken_even_without_updates():
    dp = PrivacyConfig(mode="central", clip_norm=2.0, noise_multiplier=1.5)
    a = central_dp(UNIFORM, dp, 1, 0).fuse(GLOBAL, [], CTX).state["w"]
    b = central_dp(UNIFORM, dp, 1, 0).fuse(GLOBAL, [], CTX).state["w"]
    c = central_dp(UNIFORM, dp, 1, 1).fuse(GLOBAL, [], CTX).state["w"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    big = central_dp(UNIFORM, dp, 1, 0).fuse({"w": torch.zeros(200, 200)}, [], CTX).state["w"]
    assert float(big.std()) == pytest.approx(3.0, rel=0.05)


def test_local_dp_clips_noises_and_withholds_data_dependent_numbers():
    dp = PrivacyConfig(mode="local", clip_norm=0.5, noise_multiplier=0.0)
    u = update(3, 1.0)
    u.metrics = {"train_loss": 0.3, "holdout_accuracy": 0.9, "work_units": 12.0, "iterations": 7.0}
    private = privatize_local(u, GLOBAL, dp, seed=0, round_number=1)
    norm = math.sqrt(sum(float((private.state[k] - GLOBAL[k]).double().pow(2).sum()) for k in ("w", "b")))
    assert norm == pytest.approx(0.5)
    assert (private.residual, private.holdout_loss, private.num_examples, private.local_steps) == (None, None, 1, 1)
    assert private.metrics == {"work_units": 12.0}
    noisy = privatize_local(u, GLOBAL, PrivacyConfig(mode="local", clip_norm=0.5, noise_multiplier=1.0), 0, 1)
    assert not torch.equal(noisy.state["w"], private.state["w"])


def test_epsilon_comes_from_opacus_rdp_and_behaves():
    from opacus.accountants import RDPAccountant  # noqa: PLC0415

    dp = PrivacyConfig(mode="central", noise_multiplier=1.0, delta=1e-5)
    accountant = RDPAccountant()
    for _ in range(5):
        accountant.step(noise_multiplier=1.0, sample_rate=0.5)
    assert epsilon(dp, 5, 0.5) == pytest.approx(accountant.get_epsilon(1e-5))
    values = [epsilon(dp, r, 0.5) for r in range(1, 6)]
    assert values == sorted(values) and values[0] > 0
    assert epsilon(PrivacyConfig(mode="central", noise_multiplier=2.0), 5, 0.5) < values[-1]
    assert epsilon(PrivacyConfig(mode="local", noise_multiplier=1.0), 5, 0.5) > values[-1]  # no amplification
    assert epsilon(PrivacyConfig(mode="central", noise_multiplier=0.0), 3, 0.5) == math.inf
    assert epsilon(PrivacyConfig(), 3, 0.5) is None and epsilon(None, 3, 0.5) is None


def test_poisson_sampling_is_seeded_with_the_configured_rate():
    tiers = [TierConfig(name="t", share=1.0)] * 200
    first = poisson_sample(tiers, 0, 1, 0.3, "uniform", 1)
    assert first == poisson_sample(tiers, 0, 1, 0.3, "uniform", 1)
    sizes = [len(poisson_sample(tiers, 0, r, 0.3, "uniform", 1).selected) for r in range(1, 41)]
    assert 50 < sum(sizes) / len(sizes) < 70 and len(set(sizes)) > 3


def test_a_central_dp_run_reports_epsilon_every_round(run_small):
    out, summary = run_small("dp-central", [
        "privacy.mode=central", "privacy.clip_norm=1.0", "privacy.noise_multiplier=1.0",
        "fusion.weighting=uniform", "sampling.fraction=0.6",
    ])
    records = read_jsonl(out / "metrics.jsonl")
    eps = [r["epsilon"] for r in records]
    assert all(isinstance(e, float) and 0 < e < math.inf for e in eps) and eps == sorted(eps)
    assert summary["privacy"]["epsilon"] == pytest.approx(eps[-1])
    assert summary["privacy"]["sample_rate"] == 0.6 and summary["privacy"]["mode"] == "central"
    for r in records:
        assert all(c["weight"] == pytest.approx(1 / 3) for c in r["clients"])  # 1/m, m = 0.6 * 5


def test_make_fusion_wraps_only_central_dp():
    from deqfl.fl.fusion import CentralDPFusion, Fusion, make_fusion  # noqa: PLC0415

    assert type(make_fusion(UNIFORM, None, 3.0, 0)) is Fusion
    assert type(make_fusion(UNIFORM, PrivacyConfig(mode="local"), 3.0, 0)) is Fusion
    wrapped = make_fusion(UNIFORM, PrivacyConfig(mode="central"), 3.0, 0)
    assert isinstance(wrapped, CentralDPFusion) and wrapped.config is UNIFORM and wrapped.inner.config is UNIFORM


def test_central_dp_with_server_momentum_keeps_and_restores_its_state():
    from deqfl.fl.fusion import make_fusion  # noqa: PLC0415

    config = FusionConfig(weighting="uniform", aggregator="mean", server_optimizer="fedavgm",
                          server_optimizer_options={"lr": 1.0, "momentum": 0.5})
    dp = PrivacyConfig(mode="central", clip_norm=1.0, noise_multiplier=0.0)
    fusion = make_fusion(config, dp, expected_clients=2, seed=0)
    # one client per round, delta 1.0 everywhere (norm sqrt(20)): clipped to 1/sqrt(20) per entry, then / m = 2
    d = 1 / math.sqrt(20) / 2
    first = fusion.fuse(GLOBAL, [update(0, 1.0)], CTX)
    assert torch.allclose(first.state["w"], torch.full((4, 5), d), atol=1e-7)  # v = d
    saved = fusion.state_dict()
    assert torch.allclose(saved["server_optimizer/momentum/w"], torch.full((4, 5), d, dtype=torch.float64))
    moved = {"w": first.state["w"] + 1.0, "b": first.state["b"], "n": torch.tensor(1)}
    upd = update(1, 0.0)
    upd.state = moved
    second = fusion.fuse(first.state, [upd], CTX)
    assert torch.allclose(second.state["w"], first.state["w"] + (0.5 * d + d), atol=1e-7)  # v = 0.5 d + d
    again = make_fusion(config, dp, expected_clients=2, seed=0)
    again.load_state_dict(saved)
    assert torch.equal(again.fuse(first.state, [upd], CTX).state["w"], second.state["w"])
    empty = make_fusion(config, dp, expected_clients=2, seed=0).fuse(GLOBAL, [], CTX)
    assert not empty.skipped  # no valid update: the (noise-only) step is still taken
