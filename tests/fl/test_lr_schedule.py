"""The clients' learning rate over rounds: hand-computed schedule values, the rate in every
task of the round's plan and in its record."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deqfl.fl.client import ClientData, TrainOptions
from deqfl.fl.fusion import ClientUpdate, Fusion, FusionConfig
from deqfl.fl.lr_schedule import LrSchedule
from deqfl.fl.plan import plan_round
from deqfl.fl.profiles import TierConfig
from deqfl.fl.reply import ClientReply
from deqfl.fl.server import RoundSettings, run_round


def rates(schedule: LrSchedule, lr: float) -> list[float]:
    return [schedule.lr(r, lr) for r in range(1, schedule.rounds + 1)]


def test_constant_is_the_base_rate_itself():
    assert rates(LrSchedule(rounds=5), 0.05) == [0.05] * 5
    assert LrSchedule().lr(123, 0.3) == 0.3


def test_cosine_at_the_first_middle_and_last_round():
    schedule = LrSchedule("cosine", rounds=10, lr_min=0.01)
    assert schedule.lr(1, 0.1) == 0.1  # t = 0: cos 0 = 1
    assert LrSchedule("cosine", rounds=10, lr_min=0.001).lr(1, 0.01) == 0.01  # exactly the base rate
    assert schedule.lr(6, 0.1) == pytest.approx(0.055, rel=1e-12)  # t = 5 of 10: cos(pi / 2) = 0, halfway
    last = 0.01 + 0.09 * (1 - 0.9510565162951535) / 2  # t = 9 of 10: cos(0.9 pi) = -cos(0.1 pi)
    assert schedule.lr(10, 0.1) == pytest.approx(last, rel=1e-12)
    assert last == pytest.approx(0.0122025, abs=1e-7) and last > 0.01  # the last round still trains
    values = rates(schedule, 0.1)
    assert all(a > b for a, b in zip(values, values[1:]))


def test_cosine_with_one_round_is_the_base_rate():
    assert LrSchedule("cosine", rounds=1, lr_min=0.0).lr(1, 0.2) == 0.2


def test_warmup_then_cosine_over_the_remaining_rounds():
    schedule = LrSchedule("cosine", rounds=6, warmup_rounds=2)
    got = rates(schedule, 0.3)
    assert got[:3] == pytest.approx([0.1, 0.2, 0.3], rel=1e-12)  # r / (W + 1), then the schedule's start
    assert got[3:] == pytest.approx([0.3 * (1 + math.cos(math.pi * t / 4)) / 2 for t in (1, 2, 3)], rel=1e-12)


def test_step_multiplies_by_the_factor_every_n_rounds():
    got = rates(LrSchedule("step", rounds=10, step_rounds=3, step_factor=0.5), 0.8)
    assert got == [0.8] * 3 + [0.4] * 3 + [0.2] * 3 + [0.1]


def test_a_pure_function_of_the_round():
    schedule = LrSchedule("cosine", rounds=7, lr_min=0.001, warmup_rounds=1)
    forward = rates(schedule, 0.1)
    assert [schedule.lr(r, 0.1) for r in reversed(range(1, 8))] == forward[::-1]


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="valid choices: constant, cosine, step"):
        LrSchedule("linear", rounds=3)
    with pytest.raises(ValueError, match="warmup_rounds must be in 0..rounds - 1 = 2"):
        LrSchedule("cosine", rounds=3, warmup_rounds=3)


GLOBAL = {"w": torch.linspace(-1, 1, 6).reshape(2, 3)}
TIER = TierConfig(name="t", share=1.0, max_iter=4, speed=1e-5)
CLIENTS = [ClientData(c, np.arange(8 * c, 8 * c + 8), np.arange(0)) for c in range(3)]
OPTIONS = TrainOptions(lr=0.2, momentum=0.0, weight_decay=0.0, batch_size=4, proximal_mu=0.0, residual_samples=4)
SCHEDULE = LrSchedule("cosine", rounds=4, lr_min=0.02)
SETTINGS = RoundSettings(
    seed=0, fraction=1.0, min_clients=3, rule="uniform", min_forward_cap=1, deadline_seconds=None,
    transport_dtype="float32", reference_cap=4, reference_tol=1e-3, options=OPTIONS, lr_schedule=SCHEDULE,
)


class RecordingEngine:
    """Replies as an honest client would, keeping the learning rate each task carried."""

    def __init__(self):
        self.lrs: list[float] = []

    def run_clients(self, jobs, download):
        replies = []
        for job in jobs:
            self.lrs.append(job.task.options.lr)
            update = ClientUpdate(
                client_id=job.client_id, tier=job.task.tier.name, state={k: v + 0.01 for k, v in GLOBAL.items()},
                num_examples=8, local_steps=job.assigned_steps, forward_cap=job.task.forward_cap, residual=1e-3,
                holdout_loss=None, momentum=0.0, metrics={"work_units": 1.0},
            )
            replies.append(ClientReply.from_update(update, "float32"))
        return replies


@pytest.mark.parametrize("round_number", [1, 2, 4])
def test_the_plan_sends_the_rounds_rate_in_every_task(round_number):
    plan = plan_round(round_number, GLOBAL, CLIENTS, [TIER] * 3, SETTINGS)
    expected = SCHEDULE.lr(round_number, 0.2)
    assert plan.lr == expected
    assert [job.task.options.lr for job in plan.jobs] == [expected] * 3
    assert all(job.task.options.batch_size == 4 for job in plan.jobs)  # the rest of the options as given


def test_the_round_record_keeps_the_rate_the_clients_got():
    engine = RecordingEngine()
    outcome = run_round(3, GLOBAL, CLIENTS, [TIER] * 3, SETTINGS, engine, Fusion(FusionConfig()))
    assert outcome.record.lr == SCHEDULE.lr(3, 0.2) and engine.lrs == [outcome.record.lr] * 3
    assert 0.02 < outcome.record.lr < 0.2 and not outcome.record.skipped
    assert outcome.record.to_json()["lr"] == outcome.record.lr
