"""Device profiles: tiers of devices, each a solver budget plus a simulated speed and link.

A fleet is a list of tiers. Every client belongs to exactly one tier, chosen either by an
explicit client list or by shares: shares map to clients by a seeded shuffle of the
client ids, with counts rounded by the largest-remainder rule (so they sum to N exactly).

A tier's compute budget changes only how much solver work its devices do (forward
iteration cap and tolerance, gradient mode, local work); every device trains the same
model. The one exception is a baseline: a tier `width` below 1 gives its devices the
HeteroFL sub-model of that width (`deqfl.models.width`). A tier may give `time_budget` (simulated seconds per round) instead of a fixed
cap: the client then runs the largest forward cap whose simulated time fits
(`deqfl.fl.clock.cap_for_time_budget`).
"""

from __future__ import annotations

import math
import tomllib
from importlib import resources
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from deqfl.aliases import reject_both_names, renamed_field
from deqfl.deq.backward import BackwardMode, backward_names, make_backward
from deqfl.errors import ConfigError

class TierConfig(BaseModel):
    """One class of devices. Units of `speed`: simulated seconds per unit of work, where a
    unit is one cell evaluation on one sample for a DEQ model, and one forward pass of one
    sample for an explicit model (a training step counts forward + backward as 3 units)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(description="Tier name, reported in results (e.g. 'strong').")
    share: float | None = Field(
        None, gt=0, le=1, description="Fraction of the clients in this tier (or use `clients`)."
    )
    clients: list[int] | None = Field(
        None, description="Explicit client ids in this tier (instead of `share`)."
    )
    renamed: ClassVar[dict[str, str]] = {"max_iter": "forward_cap"}
    forward_cap: int = renamed_field(
        "forward_cap", "max_iter", 16, gt=0,
        description="Forward solver iteration cap during training (old name, still accepted: max_iter).",
    )
    tol: float = Field(1e-3, gt=0, description="Forward solver relative-residual tolerance.")
    backward: str = Field(
        "jfb", description="Gradient mode: a registered name (jfb, ift, phantom, unrolled; `deqfl.deq.backward`)."
    )
    backward_steps: int = Field(
        5, gt=0, description="Phantom steps k, or the IFT backward solver's iteration cap."
    )
    phantom_tau: float = Field(0.5, gt=0, le=1, description="Phantom gradient damping tau.")
    local_epochs: int = Field(1, gt=0, description="Local epochs per round.")
    local_steps: int | None = Field(
        None, gt=0, description="Local optimiser steps per round (overrides local_epochs)."
    )
    step_fraction: float = Field(
        1.0, gt=0, le=1,
        description="Fraction of its local steps the device completes (partial work baseline).",
    )
    width: float = Field(
        1.0, gt=0, le=1,
        description="HeteroFL sub-model baseline: the device trains the sub-model with this fraction "
        "of every hidden layer's channels (explicit CNNs only; needs fusion.aggregator='heterofl').",
    )
    batch_size: int | None = Field(None, gt=0, description="Batch size (default: train.batch_size).")
    speed: float = Field(1e-5, gt=0, description="Simulated seconds per unit of work.")
    availability: float = Field(1.0, ge=0, le=1, description="Probability of answering a round.")
    bandwidth_mbps: float = Field(100.0, gt=0, description="Link bandwidth, megabits per second.")
    time_budget: float | None = Field(
        None, gt=0,
        description="Simulated seconds per round; if set the forward cap is the largest that fits.",
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: object) -> object:
        return reject_both_names(data, cls.renamed)

    @field_validator("backward")
    @classmethod
    def _registered_backward(cls, name: str) -> str:
        if name not in backward_names():
            raise ValueError(f"unknown gradient mode {name!r}; use one of {backward_names()}")
        return name

    @model_validator(mode="after")
    def _share_or_clients(self) -> "TierConfig":
        if (self.share is None) == (self.clients is None):
            raise ValueError(f"tier '{self.name}': give exactly one of `share` or `clients`")
        return self

    def gradient_mode(self) -> BackwardMode:
        """The tier's gradient mode: `backward_steps` is phantom's k or IFT's backward cap."""
        options = {
            "phantom": {"k": self.backward_steps, "tau": self.phantom_tau},
            "ift": {"max_iter": self.backward_steps},
        }.get(self.backward, {})
        return make_backward(self.backward, **options)


class FleetConfig(BaseModel):
    """The device fleet: a preset name, or an explicit list of tiers (which wins)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    preset: str = Field("three-tiers", description="Fleet preset (see `list_presets()`).")
    tiers: list[TierConfig] | None = Field(None, description="Explicit tiers; overrides `preset`.")

    def resolved_tiers(self) -> list[TierConfig]:
        return self.tiers if self.tiers is not None else load_preset(self.preset)


def list_presets() -> list[str]:
    folder = resources.files("deqfl.presets").joinpath("fleets")
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def load_preset(name: str) -> list[TierConfig]:
    """Tiers of a packaged fleet preset (deqfl/presets/fleets/<name>.toml)."""
    if name not in list_presets():
        raise ConfigError(
            f"fleet.preset: unknown preset '{name}'; valid choices: {', '.join(list_presets())}"
        )
    text = resources.files("deqfl.presets").joinpath("fleets", f"{name}.toml").read_text()
    return [TierConfig.model_validate(t) for t in tomllib.loads(text)["tiers"]]


def largest_remainder(shares: list[float], total: int) -> list[int]:
    """Integer counts proportional to `shares` that sum to `total` (Hamilton's method)."""
    quotas = [s * total for s in shares]
    counts = [math.floor(q) for q in quotas]
    order = sorted(range(len(shares)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def assign_tiers(num_clients: int, tiers: list[TierConfig], seed: int) -> list[TierConfig]:
    """The tier of each client id 0..N-1.

    Tiers with an explicit `clients` list take those ids; the remaining ids are shuffled
    with `seed` and dealt to the share-based tiers in order, counts by largest remainder.
    Shares must sum to 1 (within 1e-6) over the share-based tiers.
    """
    names = [t.name for t in tiers]
    if not tiers:
        raise ConfigError("fleet.tiers: at least one tier is required")
    if len(set(names)) != len(names):
        raise ConfigError(f"fleet.tiers: tier names must be unique, got {names}")
    assigned: list[TierConfig | None] = [None] * num_clients
    for tier in tiers:
        for cid in tier.clients or []:
            if not 0 <= cid < num_clients:
                raise ConfigError(
                    f"fleet.tiers '{tier.name}': client id {cid} is outside 0..{num_clients - 1}"
                )
            if assigned[cid] is not None:
                raise ConfigError(f"fleet.tiers: client {cid} is listed in two tiers")
            assigned[cid] = tier
    share_tiers = [t for t in tiers if t.share is not None]
    free = [cid for cid in range(num_clients) if assigned[cid] is None]
    if share_tiers:
        total_share = sum(t.share for t in share_tiers)
        if abs(total_share - 1.0) > 1e-6:
            raise ConfigError(
                f"fleet.tiers: shares must sum to 1, got {total_share:g} "
                f"({', '.join(f'{t.name}={t.share:g}' for t in share_tiers)})"
            )
        counts = largest_remainder([t.share for t in share_tiers], len(free))
        order = np.random.default_rng([seed, 0x71E2]).permutation(len(free))
        position = 0
        for tier, count in zip(share_tiers, counts):
            for k in order[position : position + count]:
                assigned[free[k]] = tier
            position += count
    missing = [cid for cid, t in enumerate(assigned) if t is None]
    if missing:
        raise ConfigError(
            f"fleet.tiers: clients {missing[:10]} belong to no tier; add a tier with a share "
            "or list them explicitly"
        )
    return assigned  # type: ignore[return-value]


def reference_tier(tiers: list[TierConfig]) -> TierConfig:
    """The strongest tier: the largest forward cap (ties: the first listed)."""
    return max(tiers, key=lambda t: t.forward_cap)
