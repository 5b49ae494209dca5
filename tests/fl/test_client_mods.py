"""The client's round: loss terms (the Jacobian penalty reaching the loss), step hooks,
client mods plugged in from outside deqfl, the client state, and the gradient-mode rule."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from deqfl.data import DatasetArrays
from deqfl.errors import ConfigError
from deqfl.fl.client import (
    ClientData,
    ClientRound,
    ClientTask,
    LocalStep,
    LossInputs,
    StepHook,
    TrainOptions,
    train_client,
)
from deqfl.fl.profiles import TierConfig
from deqfl.models import build_model, federated_state

STEPS = 3


@pytest.fixture(scope="module")
def dataset():
    digits = load_digits()
    x = (digits.images * 255 / 16).astype(np.uint8)[:, None]
    y = digits.target.astype(np.int64)
    return DatasetArrays("digits", x[:300], y[:300], x[300:400], y[300:400], tuple(str(c) for c in range(10)))


def client(cid: int) -> ClientData:
    return ClientData(cid, np.arange(40 * cid, 40 * cid + 32), np.arange(40 * cid + 32, 40 * cid + 40))


def task(jacobian_weight: float = 1.0, **tier) -> ClientTask:
    options = TrainOptions(lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=8, proximal_mu=0.0,
                           residual_samples=8, jacobian_weight=jacobian_weight)
    tier = TierConfig(name="t", share=1.0, local_steps=STEPS, **tier)
    return ClientTask(round=1, seed=0, tier=tier, forward_cap=6, reference_cap=6, reference_tol=1e-3, options=options)


def deq_model(**options):
    torch.manual_seed(0)
    return build_model("deq-mnist", (1, 8, 8), channels=4, **options)


def train(model, dataset, task_, cid=0, **kwargs):
    start = federated_state(model)
    update = train_client(model, start, task_, dataset, client(cid), **kwargs)
    return update, start


def equal(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_jacobian_penalty_reaches_the_loss_and_changes_training(dataset):
    model = deq_model(jac_reg_samples=2)
    start = federated_state(model)
    grads = {}

    class FirstGradient(StepHook):
        def __init__(self, key):
            self.key = key

        def before_update(self, step: LocalStep) -> None:
            if step.index == 0:
                grads[self.key] = torch.cat([p.grad.flatten() for p in step.params.values()])

    def spy(key):
        return lambda round_, call_next: call_next(round_.replace(step_hooks=(*round_.step_hooks, FirstGradient(key))))

    on = train_client(model, start, task(1.0), dataset, client(0), mods=[spy("on")])
    off = train_client(model, start, task(0.0), dataset, client(0), mods=[spy("off")])
    assert on.metrics["loss_jacobian"] > 0 and "loss_jacobian" not in off.metrics
    assert not torch.equal(grads["on"], grads["off"])  # the penalty reaches the gradient
    assert not equal(on.state, off.state)
    assert on.metrics["train_loss"] != off.metrics["train_loss"]  # the models already differ after step 1
    plain = train_client(deq_model(), start, task(1.0), dataset, client(0))
    assert equal(plain.state, off.state)  # weight 0 trains as a model without the penalty


def test_jacobian_penalty_is_deterministic_whatever_ran_before(dataset):
    model = deq_model(jac_reg_samples=1)
    start = federated_state(model)
    torch.manual_seed(0)
    first = train_client(model, start, task(), dataset, client(0))
    torch.manual_seed(12345)
    torch.randn(1000)
    train_client(model, start, task(), dataset, client(1))  # another client in between
    again = train_client(model, start, task(), dataset, client(0))
    assert equal(first.state, again.state) and first.metrics["loss_jacobian"] == again.metrics["loss_jacobian"]
    other_round = train_client(model, start, dataclasses.replace(task(), round=2), dataset, client(0))
    assert not equal(first.state, other_round.state)


@dataclasses.dataclass(frozen=True)
class LogitNorm:
    """A loss term written outside deqfl: weight * mean squared logit."""

    weight: float
    name: str = "logit_norm"

    def __call__(self, inputs: LossInputs) -> torch.Tensor:
        return self.weight * inputs.logits.pow(2).mean()


class CountingHook(StepHook):
    def __init__(self):
        self.calls = []

    def start(self, step):
        self.calls.append(("start", step.index, step.total))

    def before_update(self, step):
        assert step.losses and step.solves.calls[0].fixed_point is not None  # the solver iterate is exposed
        self.calls.append(("before", step.index, step.total))

    def after_update(self, step):
        self.calls.append(("after", step.index, step.total))


def test_a_custom_loss_term_and_step_hook_plug_in_through_a_mod(dataset):
    hook = CountingHook()

    def regularise(round_: ClientRound, call_next):
        return call_next(round_.replace(loss_terms=(*round_.loss_terms, LogitNorm(0.5)), step_hooks=(*round_.step_hooks, hook)))

    model = deq_model()
    plain, start = train(model, dataset, task())
    custom = train_client(model, start, task(), dataset, client(0), mods=[regularise])
    assert hook.calls == [(phase, i, STEPS) for i in range(STEPS) for phase in ("start", "before", "after")]
    assert custom.metrics["loss_logit_norm"] > 0 and not equal(plain.state, custom.state)
    assert custom.metrics["train_loss"] != plain.metrics["train_loss"] or STEPS == 1


def test_a_step_hook_can_change_the_gradients(dataset):
    class Freeze(StepHook):
        def before_update(self, step):
            for p in step.params.values():
                p.grad.zero_()

    model = deq_model()
    start = federated_state(model)
    freeze = lambda round_, call_next: call_next(round_.replace(step_hooks=(Freeze(),)))  # noqa: E731
    update = train_client(model, start, task(), dataset, client(0), mods=[freeze])
    assert equal(update.state, start)  # SGD without momentum or decay: zero gradients move nothing


def test_client_state_is_threaded_through_and_returned(dataset):
    def count_rounds(round_: ClientRound, call_next):
        state = round_.client_state or {}
        update = call_next(round_)
        return dataclasses.replace(update, client_state={"rounds": state.get("rounds", torch.tensor(0)) + 1})

    model = deq_model()
    first, start = train(model, dataset, task(), mods=[count_rounds])
    second = train_client(model, start, task(), dataset, client(0), mods=[count_rounds], client_state=first.client_state)
    assert int(second.client_state["rounds"]) == 2
    assert train_client(model, start, task(), dataset, client(0)).client_state is None


def test_a_custom_mod_wraps_inside_the_builtin_ones(dataset):
    seen = []

    def record(round_: ClientRound, call_next):
        seen.append(round_.y_train.clone())
        return call_next(round_)

    from deqfl.fl.attacks import AttackConfig

    attacked = dataclasses.replace(task(), attack=AttackConfig(kind="label-flip", clients=[0]))
    model = deq_model()
    train(model, dataset, attacked, mods=[record])
    y = torch.as_tensor(dataset.y_train[client(0).train_indices])
    assert torch.equal(seen[0], 9 - y)  # the built-in attack mod flipped the labels first


def test_the_model_gradient_mode_is_never_silently_replaced(dataset):
    model = deq_model(backward="ift")
    with pytest.raises(ConfigError, match="gradient mode 'ift' but tier 't' trains with 'jfb'"):
        train(model, dataset, task())
    update, _ = train(model, dataset, task(backward="ift", backward_steps=8))
    assert update.local_steps == STEPS
    update, _ = train(deq_model(), dataset, task(backward="phantom"))  # the default JFB takes the tier's mode
    assert update.local_steps == STEPS


def test_per_key_draws_do_not_depend_on_the_received_key_order(dataset):
    from deqfl.fl.attacks import AttackConfig
    from deqfl.fl.privacy import PrivacyConfig

    noisy = dataclasses.replace(
        task(), local_dp=PrivacyConfig(mode="local", clip_norm=1.0, noise_multiplier=0.5),
        attack=AttackConfig(kind="inject-nan", clients=[0]),
    )
    model = deq_model()
    start = federated_state(model)
    forward = train_client(model, dict(start), noisy, dataset, client(0))
    backward = train_client(model, dict(reversed(list(start.items()))), noisy, dataset, client(0))
    for key in start:  # same noise and the same NaN entries, key by key
        assert torch.equal(forward.state[key].isnan(), backward.state[key].isnan())
        assert torch.equal(forward.state[key].nan_to_num(), backward.state[key].nan_to_num())
