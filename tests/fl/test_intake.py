"""The round's intake against hostile replies: each class found by the held-out probe.

Every test drives a whole server round (`run_round`) with an engine whose replies are
built as a client would build them (`ClientReply.from_update`), then forged."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from deqfl.fl.client import ClientData, TrainOptions, local_step_count
from deqfl.fl.fusion import ClientUpdate, Fusion, FusionConfig
from deqfl.fl.intake import upload_limit
from deqfl.fl.profiles import TierConfig
from deqfl.fl.reply import MAX_TEXT, ClientReply, FieldReader, ReplyError
from deqfl.fl.server import RoundSettings, run_round
from deqfl.fl.transport import encode_state

GLOBAL = {"w": torch.linspace(-1, 1, 6).reshape(2, 3), "b": torch.zeros(3)}
STRONG = TierConfig(name="strong", share=0.5, max_iter=16, speed=1e-5)
WEAK = TierConfig(name="weak", share=0.5, max_iter=4, speed=1e-5)
TIERS = [STRONG, STRONG, WEAK, WEAK]
CLIENTS = [ClientData(c, np.arange(10 * c, 10 * c + 8), np.arange(0)) for c in range(4)]
OPTIONS = TrainOptions(lr=0.1, momentum=0.5, weight_decay=0.0, batch_size=4, proximal_mu=0.0, residual_samples=4)
SETTINGS = RoundSettings(
    seed=0, fraction=1.0, min_clients=4, rule="uniform", min_forward_cap=1, deadline_seconds=None,
    transport_dtype="float32", reference_cap=16, reference_tol=1e-3, options=OPTIONS,
)
STEPS = local_step_count(STRONG, 8, 4)


def honest_update(job) -> ClientUpdate:
    """What an honest client returns: the global model moved by an amount of its own."""
    cid = job.data.client_id
    return ClientUpdate(
        client_id=cid, tier=job.task.tier.name,
        state={k: v + 0.01 * (cid + 1) for k, v in GLOBAL.items()},
        num_examples=len(job.data.train_indices), local_steps=STEPS, forward_cap=job.task.forward_cap,
        residual=1e-3, holdout_loss=None, momentum=OPTIONS.momentum, metrics={"work_units": 10.0},
    )


class ForgingEngine:
    """Honest replies, except that `forge(cid, reply)` may rewrite each one."""

    def __init__(self, forge=lambda cid, reply: reply):
        self.forge = forge

    def run_clients(self, jobs, download):
        return [self.forge(j.data.client_id, ClientReply.from_update(honest_update(j), "float32")) for j in jobs]


def with_fields(reply: ClientReply, **changes) -> ClientReply:
    return dataclasses.replace(reply, fields={**reply.fields, **changes})


def run(engine, fusion_config: FusionConfig):
    return run_round(1, dict(GLOBAL), CLIENTS, TIERS, SETTINGS, engine, Fusion(fusion_config))


def test_fednova_uses_the_assigned_steps_not_a_claim_of_a_million():
    fusion = FusionConfig(weighting="examples", aggregator="fednova", max_norm_factor=None)
    honest = run(ForgingEngine(), fusion)
    forged = run(ForgingEngine(lambda cid, r: with_fields(r, local_steps=10**6) if cid == 1 else r), fusion)
    for key in GLOBAL:
        assert torch.equal(forged.state[key], honest.state[key])
    adjusted = [a for a in forged.record.adjusted if a.field == "local_steps"]
    assert [(a.client, a.reported, a.used) for a in adjusted] == [(1, 10**6, STEPS)]


def test_a_weak_client_cannot_claim_the_strong_cap_under_budget_quality():
    fusion = FusionConfig(weighting="quality", quality="budget")
    honest = run(ForgingEngine(), fusion)
    forged = run(ForgingEngine(lambda cid, r: with_fields(r, forward_cap=16) if cid == 2 else r), fusion)
    weights = {c.id: c.weight for c in forged.record.clients}
    assert weights == {c.id: c.weight for c in honest.record.clients}
    assert weights[2] == pytest.approx(0.25 / 2.5)  # q = 4/16 against 1, 1, 0.25, 0.25
    assert any(a.client == 2 and a.field == "forward_cap" and a.used == 4 for a in forged.record.adjusted)


@pytest.mark.parametrize("field", ["num_examples", "local_steps", "forward_cap", "residual", "momentum", "client_id"])
def test_a_number_too_large_for_a_float_is_a_rejection_not_a_crash(field):
    outcome = run(ForgingEngine(lambda cid, r: with_fields(r, **{field: 10**400}) if cid == 0 else r), FusionConfig())
    reasons = {r.client: r.reason for r in outcome.record.rejected}
    if field == "residual":  # an infinite residual is bounded, as a reported inf always was
        assert 0 not in reasons and any(a.field == "residual" and a.client == 0 for a in outcome.record.adjusted)
    else:
        assert 0 in reasons and field in reasons[0]
    assert sorted(c.id for c in outcome.record.clients) == ([0, 1, 2, 3] if field == "residual" else [1, 2, 3])


def test_an_oversized_upload_is_refused_before_it_is_decoded():
    padded = {**GLOBAL, "padding": torch.zeros(upload_limit(GLOBAL) // 4)}  # a valid state, too large

    def forge(cid, reply):
        return dataclasses.replace(reply, payload=encode_state(padded)) if cid == 3 else reply

    outcome = run(ForgingEngine(forge), FusionConfig())
    reasons = {r.client: r.reason for r in outcome.record.rejected}
    assert "exceeds the bound" in reasons[3]  # not "unexpected keys": it was never decoded


def test_a_client_error_text_is_stored_truncated():
    outcome = run(ForgingEngine(lambda cid, r: ClientReply.failed(cid, "x" * 10**6) if cid == 0 else r), FusionConfig())
    [rejection] = [r for r in outcome.record.rejected if r.client == 0]
    assert len(rejection.reason) <= MAX_TEXT


def test_an_error_field_set_by_a_forged_reply_object_is_truncated_too():
    long_error = ClientReply(0, error="y" * 5000)
    outcome = run(ForgingEngine(lambda cid, r: long_error if cid == 0 else r), FusionConfig())
    assert all(len(r.reason) <= MAX_TEXT for r in outcome.record.rejected)


def test_the_field_reader_bounds_and_names_what_was_wrong():
    reader = FieldReader({"n": 10**400, "b": True, "x": 2.5, "big": 10**400, "m": {"a": 1, "b": math.nan, 3: 4}})
    with pytest.raises(ReplyError, match=r"n must be in \[0, 10\]"):
        reader.integer("n", 0, 10)
    with pytest.raises(ReplyError, match="b must be an integer, got bool"):
        reader.integer("b", 0, 10)
    with pytest.raises(ReplyError, match="missing"):
        reader.real("absent", 0, 1)
    assert reader.real("absent", 0, 1, optional=True) is None
    assert reader.real("x", 0, 3) == 2.5 and reader.real("big", 0, math.inf) == math.inf
    assert reader.metrics("m") == {"a": 1.0}
    with pytest.raises(ReplyError, match="mapping"):
        FieldReader([1, 2])


def test_honest_replies_are_not_adjusted():
    outcome = run(ForgingEngine(), FusionConfig(weighting="quality", quality="budget"))
    assert outcome.record.adjusted == [] and outcome.record.rejected == []
    assert [c.local_steps for c in outcome.record.clients] == [STEPS] * 4
    assert [c.forward_cap for c in outcome.record.clients] == [16, 16, 4, 4]
