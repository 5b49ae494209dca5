"""The simulated clock: every time-dependent decision uses it, never the measured clock.

A device's simulated seconds for a round are

    t = speed * work + 8 * (bytes_down + bytes_up) / (bandwidth_mbps * 1e6)

where `work` counts units (one cell evaluation on one sample for a DEQ, with the cost model
of `deqfl.deq.accounting`; one forward pass of one sample for an explicit model, a training
step costing 3 per sample). Because work is counted, not timed, runs are deterministic and
resumable; measured seconds are only reported.
"""

from __future__ import annotations

from deqfl.deq.accounting import Cost, correction_cost, jacobian_penalty_cost, solve_cost
from deqfl.deq.backward import BackwardMode
from deqfl.fl.profiles import TierConfig

EXPLICIT_STEP_UNITS = 3  # forward + backward of an explicit model, per sample


def transfer_seconds(num_bytes: int, bandwidth_mbps: float) -> float:
    return 8.0 * num_bytes / (bandwidth_mbps * 1e6)


def device_seconds(tier: TierConfig, work_units: float, bytes_down: int, bytes_up: int) -> float:
    return tier.speed * work_units + transfer_seconds(bytes_down + bytes_up, tier.bandwidth_mbps)


def planned_deq_units(
    tier: TierConfig,
    cap: int,
    samples: int,
    residual_samples: int,
    reference_cap: int,
    *,
    holdout_samples: int = 0,
    jacobian_probes: int = 0,
    correction_points: int = 0,
    mode: BackwardMode | None = None,
) -> int:
    """Worst-case DEQ work of a client round, in the ledger's units: every solve runs to its
    cap and every IFT adjoint solve to its own, so the ledger's count never exceeds it.

        units = samples * (mode.step_cost(cap) + jacobian_penalty_cost(jacobian_probes)
                           + correction_cost(cap, correction_points)).units
              + holdout_samples * solve_cost(cap).units
              + residual_samples * solve_cost(reference_cap).units

    `samples` are the training samples seen (local steps * batch size), `holdout_samples`
    the client's held-back rows (evaluated at `cap`), `residual_samples` the rows of its
    residual check (at `reference_cap`), `jacobian_probes` the DEQ's `jac_reg_samples`,
    `correction_points` fixed-point correction's points (0: off);
    `mode` is the gradient mode trained with (default: the tier's).
    """
    mode = tier.gradient_mode() if mode is None else mode
    step = mode.step_cost(cap) + (jacobian_penalty_cost(jacobian_probes) if jacobian_probes else Cost())
    step = step + correction_cost(cap, correction_points)
    return (
        samples * step.units
        + holdout_samples * solve_cost(cap).units
        + residual_samples * solve_cost(reference_cap).units
    )


def cap_for_time_budget(
    tier: TierConfig,
    samples: int,
    residual_samples: int,
    reference_cap: int,
    bytes_down: int,
    bytes_up: int,
    max_cap: int = 64,
    *,
    holdout_samples: int = 0,
    jacobian_probes: int = 0,
    correction_points: int = 0,
    mode: BackwardMode | None = None,
) -> int:
    """The largest forward cap K in 1..max_cap whose worst-case simulated time
    (`planned_deq_units` with the same arguments) fits the tier's `time_budget`; 1 if even
    K = 1 does not fit (the device still takes part)."""
    assert tier.time_budget is not None
    best = 1
    for cap in range(1, max_cap + 1):
        units = planned_deq_units(
            tier, cap, samples, residual_samples, reference_cap,
            holdout_samples=holdout_samples, jacobian_probes=jacobian_probes,
            correction_points=correction_points, mode=mode,
        )
        if device_seconds(tier, units, bytes_down, bytes_up) <= tier.time_budget:
            best = cap
        else:
            break
    return best
