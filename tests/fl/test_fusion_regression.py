"""Bitwise pins: fusion results equal those of the code before server optimisers and the
central-DP wrapper existed (values printed by the previous `Fusion` and `central_fuse`
on these inputs, as float.hex), so stored runs reproduce."""

from __future__ import annotations

import json

import pytest
import torch

from deqfl.fl.fusion import ClientUpdate, Fusion, FusionConfig, FusionContext, make_fusion
from deqfl.fl.privacy import PrivacyConfig


def global_state() -> dict[str, torch.Tensor]:
    return {"w": torch.linspace(-1, 1, 6).reshape(2, 3), "b": torch.tensor([0.5, -0.25, 0.125]), "n": torch.tensor(3)}


def update(cid: int, scale: float, shift: float) -> ClientUpdate:
    base = global_state()
    state = {"w": base["w"] * scale + shift, "b": base["b"] - shift, "n": torch.tensor(9)}
    return ClientUpdate(client_id=cid, tier="t", state=state, num_examples=10 + cid, local_steps=1 + cid,
                        forward_cap=16, residual=0.01 * (cid + 1), holdout_loss=None, momentum=0.0)


UPDATES = [update(1, 1.3, 0.2), update(2, 0.7, -0.4), update(3, 5.0, 2.0)]
CTX = FusionContext(round=3, reference_cap=16, known_num_examples={1: 11, 2: 12, 3: 13})
N = ["0x1.8000000000000p+1"]
PINNED = {
    "{}": {
        "w": ["-0x1.aebb680000000p+0", "-0x1.9377360000000p-1", "0x1.b443440000000p-4",
              "0x1.0044020000000p+0", "0x1.e543d20000000p+0", "0x1.6521d00000000p+1"],
        "b": ["-0x1.b883640000000p-5", "-0x1.9b88360000000p-1", "-0x1.b7106c0000000p-2"], "n": N,
    },
    '{"weighting": "examples", "aggregator": "fednova", "server_lr": 0.5}': {
        "w": ["-0x1.50f0320000000p+0", "-0x1.602d840000000p-1", "-0x1.e7a9fe0000000p-5",
              "0x1.2338420000000p-1", "0x1.3275920000000p+0", "0x1.d34f040000000p+0"],
        "b": ["0x1.f684be0000000p-3", "-0x1.025ed00000000p-1", "-0x1.097b440000000p-3"], "n": N,
    },
    '{"aggregator": "trimmed-mean", "trim_fraction": 0.34}': {
        "w": ["-0x1.19999a0000000p+0", "-0x1.a3d70c0000000p-1", "-0x1.eb85080000000p-5",
              "0x1.d70a3c0000000p-2", "0x1.f5c2900000000p-1", "0x1.8000000000000p+0"],
        "b": ["0x1.3333340000000p-2", "-0x1.cccccc0000000p-2", "-0x1.3333340000000p-4"], "n": N,
    },
}
CENTRAL = {
    "w": ["-0x1.197ecc0000000p+0", "-0x1.deb6380000000p-1", "-0x1.307a540000000p-2",
          "0x1.2e98640000000p-4", "0x1.6b86760000000p-1", "0x1.5961f60000000p+0"],
    "b": ["0x1.be08780000000p-2", "-0x1.934a480000000p-2", "0x1.3a6b820000000p-2"], "n": N,
}


def hexes(state: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    return {k: [float(x).hex() for x in v.reshape(-1).tolist()] for k, v in state.items()}


@pytest.mark.parametrize("config", sorted(PINNED))
def test_plain_fusion_is_bitwise_what_it_was(config):
    result = Fusion(FusionConfig(**json.loads(config))).fuse(global_state(), UPDATES, CTX)
    assert hexes(result.state) == PINNED[config]


def test_central_dp_wrapper_is_bitwise_the_old_central_fuse():
    privacy = PrivacyConfig(mode="central", clip_norm=0.7, noise_multiplier=1.3)
    fusion = make_fusion(FusionConfig(weighting="uniform", aggregator="mean", server_lr=0.5), privacy, 2.5, 7)
    result = fusion.fuse(global_state(), UPDATES, CTX)
    assert hexes(result.state) == CENTRAL
    assert [(a["client"], a["field"], a["used"]) for a in result.adjusted] == [(c, "update_norm", 0.7) for c in (1, 2, 3)]
    assert result.weights == {1: 0.4, 2: 0.4, 3: 0.4} and not result.skipped
