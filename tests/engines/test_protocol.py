"""The Flower task protocol carries every ClientTask field, the reliability ones included."""

import dataclasses

import pytest

pytest.importorskip("flwr")

from deqfl.engines.flower.protocol import task_from_json, task_to_json  # noqa: E402
from deqfl.fl.attacks import AttackConfig  # noqa: E402
from deqfl.fl.client import ClientTask, TrainOptions  # noqa: E402
from deqfl.fl.privacy import PrivacyConfig  # noqa: E402
from deqfl.fl.profiles import TierConfig  # noqa: E402


def _task(**extra) -> ClientTask:
    return ClientTask(
        round=3, seed=7, tier=TierConfig(name="weak", share=0.5, max_iter=2), forward_cap=2,
        reference_cap=8, reference_tol=1e-3,
        options=TrainOptions(lr=0.1, momentum=0.9, weight_decay=0.0, batch_size=32, proximal_mu=0.01, residual_samples=256),
        **extra,
    )


def test_plain_task_round_trips():
    task = _task()
    assert task_from_json(task_to_json(task)) == task


def test_attack_crash_and_local_dp_travel_to_the_client_app():
    task = _task(
        attack=AttackConfig(kind="sign-flip", clients=[1], flip_scale=2.0),
        crash_at=0.25,
        local_dp=PrivacyConfig(mode="local", clip_norm=0.5, noise_multiplier=1.1),
    )
    back = task_from_json(task_to_json(task))
    assert back == task
    assert back.attack.kind == "sign-flip" and back.attack.flip_scale == 2.0
    assert back.crash_at == 0.25 and back.local_dp.mode == "local" and back.local_dp.noise_multiplier == 1.1


def test_the_optimiser_its_options_the_rounds_rate_and_augmentation_travel_to_the_client_app():
    options = TrainOptions(lr=0.0123, momentum=0.9, weight_decay=1e-4, batch_size=32, proximal_mu=0.0,
                           residual_samples=256, optimizer="adam", optimizer_options={"beta_2": 0.99, "eps": 1e-6},
                           augment="crop-flip")
    task = dataclasses.replace(_task(), options=options)
    back = task_from_json(task_to_json(task))
    assert back == task and back.options == options
    assert back.options.optimizer_options == {"beta_2": 0.99, "eps": 1e-6} and back.options.lr == 0.0123
