"""Attack simulation: a seeded share of the clients is malicious and attacks every round.

The malicious set is chosen once per run from the seed (`malicious_clients`) and kept in
the results (`summary.json` `malicious`; each round's `malicious` lists the sampled ones
and `malicious_weight` the fusion weight they won). A malicious client's task carries the
`AttackConfig`; the attack is carried out by the client's `attack` mod
(`deqfl.fl.client.wrappers`), so the hostile state goes through the real path (encoded by the engine, decoded and validated by
the server) exactly as an honest one would.

With Delta = x_k - x the client's honest update from the global model x:

| kind | what the client sends |
|---|---|
| `sign-flip` | x - flip_scale * Delta |
| `scale` | x + scale * Delta (a large `scale` is a huge-norm update) |
| `gaussian` | x + N(0, noise_std^2) per coordinate (its update replaced by noise) |
| `label-flip` | trains on labels y -> C - 1 - y, then replies honestly |
| `inject-nan`, `inject-inf` | its model with NaN (or +-Inf) in a seeded 1% (at least one) of the entries of every floating tensor |
| `wrong-shape` | its model with one extra row in the first floating tensor |
| `inflate-examples` | claims `claimed_examples` training examples |
| `tiny-residual` | claims the relative residual `claimed_residual` |

The two lies come with the update chosen by `lie_with` (default a sign-flipped one, so any
weight the lie wins does harm). Every random choice (noise, which entries) is drawn from
a generator seeded by (seed, round, client).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from deqfl.fl.update import ClientUpdate

AttackKind = Literal[
    "none", "sign-flip", "scale", "gaussian", "label-flip", "inject-nan", "inject-inf", "wrong-shape",
    "inflate-examples", "tiny-residual",
]

_SEED_TAG = 0xA77AC


class AttackConfig(BaseModel):
    """Attack simulation: which clients are malicious and what they send (docs/RELIABILITY.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: AttackKind = Field(
        "none",
        description="What malicious clients do: none, sign-flip, scale, gaussian, label-flip, "
        "inject-nan, inject-inf, wrong-shape, inflate-examples, tiny-residual (see deqfl/fl/attacks.py).",
    )
    fraction: float = Field(
        0.0, ge=0, le=1,
        description="Share of the registered clients that are malicious (round(fraction * N), "
        "chosen from the seed); ignored when `clients` is given.",
    )
    clients: list[int] | None = Field(
        None, description="Explicit malicious client ids (instead of `fraction`)."
    )
    scale: float = Field(10.0, gt=0, description="kind=scale: the client sends x + scale * (x_k - x).")
    flip_scale: float = Field(
        1.0, gt=0, description="kind=sign-flip (and lies with lie_with=sign-flip): the client sends x - flip_scale * (x_k - x)."
    )
    noise_std: float = Field(0.1, gt=0, description="kind=gaussian: standard deviation of the noise sent as the update.")
    claimed_examples: int = Field(
        10**9, ge=1, description="kind=inflate-examples: the example count the client claims."
    )
    claimed_residual: float = Field(
        0.0, ge=0, description="kind=tiny-residual: the relative residual the client claims."
    )
    lie_with: Literal["honest", "sign-flip"] = Field(
        "sign-flip",
        description="kind=inflate-examples/tiny-residual: the update sent with the lie.",
    )

    @property
    def active(self) -> bool:
        return self.kind != "none" and (bool(self.clients) or self.fraction > 0)


def malicious_clients(config: AttackConfig, num_clients: int, seed: int) -> list[int]:
    """The run's malicious client ids, sorted: `clients`, or a seeded round(fraction * N)."""
    if config.kind == "none":
        return []
    if config.clients is not None:
        return sorted({int(c) for c in config.clients if 0 <= c < num_clients})
    count = min(num_clients, int(round(config.fraction * num_clients)))
    rng = np.random.default_rng([seed, _SEED_TAG])
    return sorted(int(c) for c in rng.choice(num_clients, size=count, replace=False))


def attack_generator(seed: int, round_number: int, client: int) -> torch.Generator:
    """The generator of a malicious client's random choices in one round."""
    draw = np.random.default_rng([seed, round_number, client, _SEED_TAG]).integers(2**62)
    return torch.Generator().manual_seed(int(draw))


def flip_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """kind=label-flip: y -> num_classes - 1 - y."""
    return (num_classes - 1) - labels


def tamper_update(
    update: ClientUpdate,
    global_state: Mapping[str, torch.Tensor],
    attack: AttackConfig,
    generator: torch.Generator,
) -> ClientUpdate:
    """The reply a malicious client sends instead of its honest `update`."""
    kind = attack.kind
    if kind in ("none", "label-flip"):
        return update
    state = {k: v.detach().clone() for k, v in update.state.items()}
    fields: dict = {}
    if kind in ("inflate-examples", "tiny-residual"):
        if attack.lie_with == "sign-flip":
            state = _step(global_state, state, -attack.flip_scale)
        if kind == "inflate-examples":
            fields["num_examples"] = attack.claimed_examples
        else:
            fields["residual"] = attack.claimed_residual
    elif kind == "sign-flip":
        state = _step(global_state, state, -attack.flip_scale)
    elif kind == "scale":
        state = _step(global_state, state, attack.scale)
    elif kind == "gaussian":
        for key, g in global_state.items():
            if g.is_floating_point():
                noise = torch.randn(g.shape, generator=generator, dtype=torch.float64, device=generator.device)
                state[key] = (g.double() + attack.noise_std * noise.to(g.device)).to(g.dtype)
    elif kind in ("inject-nan", "inject-inf"):
        for key, value in state.items():
            if value.is_floating_point() and value.numel():
                flat = value.view(-1)
                count = max(1, math.ceil(0.01 * flat.numel()))
                where = torch.randperm(flat.numel(), generator=generator, device=generator.device)[:count].to(flat.device)
                if kind == "inject-nan":
                    flat[where] = float("nan")
                else:
                    signs = torch.randint(0, 2, (count,), generator=generator, device=generator.device).to(flat.device)
                    flat[where] = torch.where(signs == 1, math.inf, -math.inf).to(flat.dtype)
    elif kind == "wrong-shape":
        key = next((k for k, v in state.items() if v.is_floating_point()), None)
        if key is not None:
            value = state[key] if state[key].dim() else state[key].reshape(1)
            state[key] = torch.cat([value, value[:1]])
    return dataclasses.replace(update, state=state, **fields)


def _step(
    global_state: Mapping[str, torch.Tensor], state: dict[str, torch.Tensor], factor: float
) -> dict[str, torch.Tensor]:
    """x + factor * (x_k - x) on floating keys (computed in float64); others unchanged."""
    out = dict(state)
    for key, g in global_state.items():
        if g.is_floating_point() and key in state:
            delta = state[key].double() - g.double()
            out[key] = (g.double() + factor * delta).to(state[key].dtype)
    return out
