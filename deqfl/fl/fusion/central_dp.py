"""Central DP around a fusion, as Flower's `DifferentialPrivacyServerSideFixedClipping`
wraps a strategy; and `make_fusion`, which picks the plain or the wrapped fusion.

`CentralDPFusion(inner, privacy, expected_clients, seed)` keeps the inner fusion's
skeleton (`Fusion.fuse_with`: validation, finite check, server optimiser and its state)
and replaces only its combine stage by the DP-FedAvg aggregate (McMahan et al., ICLR
2018; deqfl/fl/privacy.py):

    d = (sum_k clip_C(x_k - x) + N(0, sigma^2 C^2 I)) / m,      x_new = optimizer(x, d)

with clip_C(u) = u * min(1, C / ||u||), m = `expected_clients` fixed (weights 1/m), the
noise seeded by (seed, round). Validation drops the adaptive norm bound (clipping
replaces it) and there is no `min_updates` skip: a round with no valid update still takes
the noisy step. The server optimiser only post-processes d, so any optimiser, stateful or
not, keeps the guarantee. The inner weighting and aggregator are not used: the config
check (`deqfl.fl.privacy.check_fusion`) admits only rules flagged `central_dp` (uniform,
mean), which this aggregate computes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from deqfl.fl.fusion.config import FusionConfig
from deqfl.fl.fusion.fusion import Combined, Fusion, FusionResult
from deqfl.fl.fusion.scaffold import ScaffoldFusion
from deqfl.fl.update import FusionContext
from deqfl.fl.validation import ValidatedUpdate

if TYPE_CHECKING:
    from deqfl.fl.privacy import PrivacyConfig

SEED_TAG = 0xD1F
"""Mixed into every DP random stream (client sampling, central and local noise)."""


def noise_generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded by `parts` (e.g. seed, round[, client]) and `SEED_TAG`."""
    draw = np.random.default_rng([*parts, SEED_TAG]).integers(2**62)
    return torch.Generator().manual_seed(int(draw))


def clip_factor(norm: float, clip_norm: float) -> float:
    """min(1, C / norm): the factor that clips a delta of L2 norm `norm` to C."""
    return 1.0 if norm <= clip_norm else clip_norm / norm


class CentralDPFusion:
    """Central DP wrapped around `inner` (module docstring); the interface of `Fusion`."""

    def __init__(self, inner: Fusion, privacy: PrivacyConfig, expected_clients: float, seed: int) -> None:
        if privacy.mode != "central":
            raise ValueError(f"CentralDPFusion needs privacy.mode='central', got {privacy.mode!r}")
        self.inner = inner
        self.privacy = privacy
        self.expected_clients = float(expected_clients)
        self.seed = seed

    @property
    def config(self) -> FusionConfig:
        return self.inner.config

    def fuse(
        self, global_state: Mapping[str, torch.Tensor], updates: Sequence[object], ctx: FusionContext
    ) -> FusionResult:
        """One DP-FedAvg step; never raises on anything a client sent. Clipped updates
        appear in `adjusted` as field `update_norm` (reported -> used); each accepted
        client's weight is 1/m (the weights sum to replies/m, not to 1)."""
        limits = dataclasses.replace(self.inner.config.limits(), max_norm_factor=None)
        return self.inner.fuse_with(global_state, updates, ctx, limits, 0, self._combine)

    def _combine(
        self,
        global_state: Mapping[str, torch.Tensor],
        accepted: list[ValidatedUpdate],
        ctx: FusionContext,
        result: FusionResult,
    ) -> Combined:
        clip_norm = self.privacy.clip_norm
        m = max(self.expected_clients, 1e-12)
        total = {
            k: torch.zeros(g.shape, dtype=torch.float64, device=g.device)
            for k, g in global_state.items()
            if g.is_floating_point()
        }
        for v in accepted:
            factor = clip_factor(v.norm, clip_norm)
            if factor < 1.0:
                result.adjusted.append(
                    {"client": v.update.client_id, "field": "update_norm", "reported": v.norm, "used": clip_norm}
                )
            for key, acc in total.items():
                acc.add_(v.delta[key], alpha=factor)
        generator = noise_generator(self.seed, ctx.round)
        std = self.privacy.noise_multiplier * clip_norm
        delta = {}
        for key, acc in total.items():
            noise = torch.randn(acc.shape, generator=generator, dtype=torch.float64) * std
            delta[key] = (acc + noise.to(acc.device)) / m
        return Combined(delta=delta, weights=[1.0 / m] * len(accepted), quality=[1.0] * len(accepted))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.inner.state_dict()

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.inner.load_state_dict(state)


def make_fusion(
    fusion: FusionConfig, privacy: PrivacyConfig | None, expected_clients: float, seed: int,
    num_clients: int | None = None,
) -> Fusion | CentralDPFusion | ScaffoldFusion:
    """The run's fusion: `Fusion(fusion)`, wrapped in `CentralDPFusion` when
    `privacy.mode == 'central'` (`expected_clients` = m, the expected number of sampled
    clients per round; `seed` seeds the noise). Local DP acts on the clients, so its
    fusion is the plain one. `fusion.control_variates == 'scaffold'` wraps it in
    `ScaffoldFusion` over `num_clients` registered clients (required then; the config check
    refuses SCAFFOLD with DP)."""
    inner = Fusion(fusion)
    if fusion.control_variates == "scaffold":
        if num_clients is None:
            raise ValueError("make_fusion: fusion.control_variates='scaffold' needs num_clients")
        return ScaffoldFusion(inner, num_clients)
    if privacy is not None and privacy.mode == "central":
        return CentralDPFusion(inner, privacy, expected_clients, seed)
    return inner
