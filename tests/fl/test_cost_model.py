"""One cost model: the time-budget planner predicts exactly what the DEQ's ledger charges.

Tolerances of zero (or far below float precision) make every forward solve run to its cap,
the worst case the planner assumes, so the prediction is exact for JFB, Phantom and
Unrolled; for IFT the adjoint solve may stop early or fall back to JFB, so the prediction
is an upper bound (and exact when the adjoint runs to its cap without a fallback).
"""

import numpy as np
import pytest
import torch

from deqfl.deq.budget import solver_budget
from torch import nn

from deqfl.data import load_dataset
from deqfl.deq import DEQ, IFT, JFB, Phantom, SolverConfig, Unrolled
from deqfl.deq.accounting import Cost, jacobian_penalty_cost, solve_cost
from deqfl.fl.client import ClientData, ClientTask, TrainOptions, train_client
from deqfl.fl.clock import cap_for_time_budget, planned_deq_units
from deqfl.fl.profiles import TierConfig
from deqfl.models import build_model, federated_state

CAP, REFERENCE_CAP, BATCH, STEPS = 4, 6, 8, 3
TRAIN_ROWS, HOLDOUT_ROWS, RESIDUAL_SAMPLES = 40, 5, 16


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return load_dataset("digits", cache_dir=tmp_path_factory.mktemp("cache"))


def _tier(backward, **kw):
    return TierConfig(name="t", share=1.0, max_iter=CAP, tol=1e-30, backward=backward,
                      backward_steps=3, local_steps=STEPS, batch_size=BATCH, **kw)


def _planned(tier, cap, correction_points=0):
    return planned_deq_units(tier, cap, STEPS * BATCH, RESIDUAL_SAMPLES, REFERENCE_CAP,
                             holdout_samples=HOLDOUT_ROWS, correction_points=correction_points)


def _measured(digits, tier, cap=CAP, **train):
    """The ledger's work units of a real client round at forward cap `cap`."""
    torch.manual_seed(0)
    model = build_model("deq-mnist", input_shape=digits.input_shape, num_classes=digits.num_classes, channels=4)
    options = TrainOptions(lr=0.05, momentum=0.0, weight_decay=0.0, batch_size=BATCH,
                           proximal_mu=0.0, residual_samples=RESIDUAL_SAMPLES, **train)
    task = ClientTask(round=1, seed=0, tier=tier, forward_cap=cap, reference_cap=REFERENCE_CAP,
                      reference_tol=0.0, options=options)
    rows = np.arange(TRAIN_ROWS + HOLDOUT_ROWS)
    data = ClientData(0, rows[:TRAIN_ROWS], rows[TRAIN_ROWS:])
    return train_client(model, federated_state(model), task, digits, data).metrics["work_units"]


@pytest.mark.parametrize("backward", ["jfb", "phantom", "unrolled"])
def test_planner_equals_the_ledger_of_a_client_round(digits, backward):
    tier = _tier(backward)
    assert _measured(digits, tier) == _planned(tier, CAP)


def test_planner_counts_fixed_point_correction(digits):
    tier = _tier("jfb")
    measured = _measured(digits, tier, fixed_point_correction=0.5, correction_points=2)
    assert measured == _planned(tier, CAP, correction_points=2) > _planned(tier, CAP)


def test_planner_bounds_the_ledger_of_an_ift_client_round(digits):
    tier = _tier("ift")
    # no cheaper than JFB (its fallback), no dearer than the adjoint solve at its cap
    assert _planned(_tier("jfb"), CAP) <= _measured(digits, tier) <= _planned(tier, CAP)


def test_jfb_step_is_cap_plus_three_units():
    """The defect of issue 15: the planner counted a JFB step as cap + 1 units."""
    assert JFB().step_cost(CAP).units == CAP + 3
    assert Phantom(k=5).step_cost(CAP).units == CAP + 15
    assert Unrolled().step_cost(CAP).units == 3 * CAP
    assert IFT(max_iter=7).step_cost(CAP).units == CAP + 2 + 2 * 8


class Cell(nn.Module):
    """f(z, x) = tanh(W z + x), ||W||_2 = 0.9."""

    def __init__(self, dim=6):
        super().__init__()
        w = torch.randn(dim, dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        self.w = nn.Parameter(0.9 * w / torch.linalg.matrix_norm(w, 2))

    def forward(self, z, x):
        return torch.tanh(z @ self.w.T + x)


@pytest.mark.parametrize("mode", [
    JFB(), Phantom(k=3), Unrolled(), Unrolled(steps=2),
    IFT(max_iter=5, tol=0.0, fallback_threshold=1e9),  # adjoint runs to its cap, no fallback
    IFT(max_iter=2, fallback=Phantom(k=4), fallback_threshold=1e-30),  # always falls back
], ids=lambda m: repr(m))
@pytest.mark.parametrize("jacobian_probes", [0, 2])
def test_ledger_charges_exactly_the_step_cost(mode, jacobian_probes):
    batch = 3
    deq = DEQ(Cell(), train_solver=SolverConfig(max_iter=CAP, tol=0.0), backward=mode,
              jac_reg_samples=jacobian_probes)
    x = torch.randn(batch, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    deq.train()
    with solver_budget(deq, generator=torch.Generator().manual_seed(2)):  # the penalty is computed when recorded
        deq(x).sum().backward()
    expected = mode.step_cost(CAP) + (jacobian_penalty_cost(jacobian_probes) if jacobian_probes else Cost())
    assert deq.cell_evals == batch * expected.units
    deq.reset_counters()
    deq.eval()
    deq(x)
    assert deq.cell_evals == batch * solve_cost(CAP).units


def test_time_budget_cap_fits_the_ledger(digits):
    """The cap the planner picks for a time budget keeps the measured work inside it, and
    the next cap would not fit."""
    tier = _tier("jfb", speed=1e-3, time_budget=1.0)
    cap = cap_for_time_budget(tier, STEPS * BATCH, RESIDUAL_SAMPLES, REFERENCE_CAP, 0, 0,
                              holdout_samples=HOLDOUT_ROWS)
    assert _measured(digits, tier, cap) * tier.speed <= 1.0 < _measured(digits, tier, cap + 1) * tier.speed
