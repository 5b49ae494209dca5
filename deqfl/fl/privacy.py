"""Client-level differential privacy: clipping plus Gaussian noise, central or local.

The unit of privacy is a *client* (its whole data set): neighbouring runs differ by one
client's data. `epsilon` is reported every round for the configured `delta`, computed by
Opacus' RDP accountant (the analysis behind `opacus.accountants.RDPAccountant`:
`compute_rdp` for one round of the subsampled Gaussian mechanism, times the rounds run,
then `get_privacy_spent`); deqfl has no accountant of its own.

**central** (DP-FedAvg, McMahan et al., ICLR 2018; trusted server). Each round:

1. clients are Poisson-sampled: every eligible client independently with probability
   q = `sampling.fraction` (seeded by seed and round; `sampling.min_clients` does not
   apply, since forcing a minimum breaks the sampling the accountant assumes);
2. the server validates each update on its own (keys, shapes, dtypes, finite values;
   the adaptive norm bound is *not* applied, because it depends on the other clients'
   updates; clipping replaces it), clips each delta x_k - x to L2 norm <= C (`clip_norm`),
3. and fuses d = (sum_k clip(x_k - x) + N(0, sigma^2 C^2 I)) / m, with m = q * (eligible
   clients) fixed (uniform weights 1/m, not the number of replies), stepping the model
   with the server optimiser (default `sgd`: x + server_lr * d; a stateful one such as
   FedAdam is post-processing of d, so it keeps the guarantee); a round with no valid
   update still takes the noisy step (skipping it would reveal that no update was valid).
   This is `deqfl.fl.fusion.CentralDPFusion`, a wrapper around the run's `Fusion`.

The accountant: sampled Gaussian mechanism with sampling rate q and noise multiplier
sigma, composed over the rounds run. Holds for `weighting = "uniform"` with
`aggregator = "mean"` only: client-reported numbers (examples, residuals, losses) and
robust rules (median, trimmed mean, Krum) change each client's influence in ways the
analysis does not cover, so other rules are refused (ConfigError). The allowed rules are
those whose registry entries carry the flag `central_dp` (local: `local_dp`); see
docs/FUSION.md.

**local** (untrusted server). Each client clips its own delta to C and adds
N(0, sigma^2 C^2 I) before it sends, and withholds every data-dependent number it would
otherwise report (residual, held-back loss and accuracy, example count, local steps,
training loss, solver iterations). Everything the server does after that is
post-processing, so any rule that does not use client-reported numbers keeps the
guarantee: `weighting = "uniform"` with `mean`, `median`, `trimmed-mean`, `krum` or
`multi-krum`. The reported epsilon is for a client that took part in every round
(sampling rate 1: the server knows who was sampled, so subsampling does not amplify).

What is not covered: the simulated clock (work units, hence stragglers), bytes counts,
and, in central mode, the per-client records in `metrics.jsonl` (the trusted server's own
logs; only the global models and what is computed from them are protected).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from deqfl.fl.fusion import FusionConfig
from deqfl.fl.fusion.central_dp import SEED_TAG, clip_factor, noise_generator
from deqfl.fl.fusion.compat import check_dp
from deqfl.fl.profiles import TierConfig
from deqfl.fl.sampling import RoundSample, eligible_clients
from deqfl.fl.update import ClientUpdate
from deqfl.fl.validation import delta_norm, float_delta

LOCAL_METRICS = ("work_units",)
"""The only metrics a client keeps reporting under local DP (the simulated clock needs it)."""


class PrivacyConfig(BaseModel):
    """Client-level differential privacy (deqfl/fl/privacy.py, docs/RELIABILITY.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    mode: Literal["off", "central", "local"] = Field(
        "off",
        description="off; central: Poisson client sampling at rate sampling.fraction, server-side "
        "clipping and noise, uniform fixed-denominator mean (needs fusion.weighting='uniform', "
        "fusion.aggregator='mean'; the adaptive norm bound and min_clients do not apply); "
        "local: each client clips and noises its own update (needs fusion.weighting='uniform' "
        "and aggregator mean, median, trimmed-mean, krum or multi-krum).",
    )
    clip_norm: float = Field(1.0, gt=0, description="C: every client update x_k - x is clipped to L2 norm <= C.")
    noise_multiplier: float = Field(
        1.0, ge=0, description="sigma: Gaussian noise of standard deviation sigma * C per coordinate (below 0.01, epsilon is reported as inf)."
    )
    delta: float = Field(1e-5, gt=0, lt=1, description="delta of the (epsilon, delta) guarantee reported as `epsilon` each round.")

    @property
    def enabled(self) -> bool:
        return self.mode != "off"


def check_fusion(privacy: PrivacyConfig, fusion: FusionConfig) -> None:
    """ConfigError unless the DP guarantee holds for `fusion`'s rule: its weighting and
    aggregator must carry the mode's capability flag (`central_dp` / `local_dp`, see
    deqfl.fl.fusion.compat and docs/FUSION.md); any server optimiser is allowed."""
    if privacy.enabled:
        check_dp(privacy.mode, fusion)


def poisson_sample(
    tiers: list[TierConfig], seed: int, round_number: int, rate: float, rule: str, min_cap: int
) -> RoundSample:
    """Each eligible client independently with probability `rate`, then its tier's
    availability; seeded by (seed, round). May select no client."""
    eligible = eligible_clients(tiers, rule, min_cap)
    rng = np.random.default_rng([seed, round_number, SEED_TAG])
    chosen = [c for c, u in zip(eligible, rng.random(len(eligible))) if u < rate]
    answers = rng.random(len(chosen))
    return RoundSample(
        selected=[c for c, a in zip(chosen, answers) if a < tiers[c].availability],
        unavailable=[c for c, a in zip(chosen, answers) if a >= tiers[c].availability],
    )


def privatize_local(
    update: ClientUpdate,
    global_state: Mapping[str, torch.Tensor],
    privacy: PrivacyConfig,
    seed: int,
    round_number: int,
) -> ClientUpdate:
    """Local DP on the client: clip its delta to C, add N(0, sigma^2 C^2), and withhold
    every data-dependent number (module docstring). Seeded by (seed, round, client)."""
    delta = float_delta(global_state, update.state)
    factor = clip_factor(delta_norm(delta), privacy.clip_norm)
    generator = noise_generator(seed, round_number, update.client_id)
    std = privacy.noise_multiplier * privacy.clip_norm
    state = dict(update.state)
    for key, g in global_state.items():
        if g.is_floating_point():
            noise = torch.randn(g.shape, generator=generator, dtype=torch.float64) * std
            state[key] = (g.detach().double() + factor * delta[key] + noise).to(update.state[key].dtype)
    return dataclasses.replace(
        update, state=state, num_examples=1, local_steps=1, residual=None, holdout_loss=None,
        metrics={k: v for k, v in update.metrics.items() if k in LOCAL_METRICS},
    )


def sample_rate(privacy: PrivacyConfig, fraction: float) -> float:
    """The sampling rate the accountant uses: q = fraction (central), 1 (local)."""
    return fraction if privacy.mode == "central" else 1.0


def epsilon(privacy: PrivacyConfig | None, rounds: int, fraction: float) -> float | None:
    """epsilon after `rounds` rounds at `privacy.delta` (None when DP is off; inf without
    noise)."""
    if privacy is None or not privacy.enabled:
        return None
    return _epsilon(privacy.noise_multiplier, sample_rate(privacy, fraction), rounds, privacy.delta)


MIN_NOISE = 0.01
"""Below this noise multiplier epsilon is reported as inf (it would exceed 10^4 after one
round at any useful sampling rate, and the accountant's series converge very slowly)."""


def _epsilon(noise_multiplier: float, rate: float, rounds: int, delta: float) -> float:
    """Opacus' RDP analysis of the sampled Gaussian mechanism: the RDP of one round at
    each order, times `rounds` (RDP composes additively), converted to (epsilon, delta)."""
    if rounds <= 0 or rate <= 0:
        return 0.0
    if noise_multiplier < MIN_NOISE:
        return math.inf
    from opacus.accountants.analysis import rdp  # noqa: PLC0415 - slow import, DP runs only

    orders, one_round = _rdp_one_round(noise_multiplier, min(rate, 1.0))
    with warnings.catch_warnings():  # "optimal order is the smallest/largest alpha": a looser bound
        warnings.simplefilter("ignore", UserWarning)
        try:
            value, _ = rdp.get_privacy_spent(orders=orders, rdp=one_round * rounds, delta=delta)
        except (ArithmeticError, ValueError):
            return math.inf
    value = float(value)
    return value if math.isfinite(value) else math.inf


@functools.lru_cache(maxsize=256)
def _rdp_one_round(noise_multiplier: float, rate: float):
    from opacus.accountants import RDPAccountant  # noqa: PLC0415
    from opacus.accountants.analysis import rdp  # noqa: PLC0415

    orders = list(RDPAccountant.DEFAULT_ALPHAS)
    return orders, rdp.compute_rdp(q=rate, noise_multiplier=noise_multiplier, steps=1, orders=orders)
