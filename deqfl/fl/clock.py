"""The simulated clock: every time-dependent decision uses it, never the measured clock.

A device's simulated seconds for a round are

    t = speed * work + 8 * (bytes_down + bytes_up) / (bandwidth_mbps * 1e6)

where `work` counts units (one cell evaluation on one sample for a DEQ; one forward pass
of one sample for an explicit model, a training step costing 3 per sample). Because work
is counted, not timed, runs are deterministic and resumable; measured seconds are only
reported.
"""

from __future__ import annotations

from deqfl.fl.profiles import TierConfig

EXPLICIT_STEP_UNITS = 3  # forward + backward of an explicit model, per sample


def transfer_seconds(num_bytes: int, bandwidth_mbps: float) -> float:
    return 8.0 * num_bytes / (bandwidth_mbps * 1e6)


def device_seconds(tier: TierConfig, work_units: float, bytes_down: int, bytes_up: int) -> float:
    return tier.speed * work_units + transfer_seconds(bytes_down + bytes_up, tier.bandwidth_mbps)


def backward_units(tier: TierConfig) -> int:
    """Cell evaluations per sample the tier's gradient mode spends (upper bound)."""
    return {"jfb": 1, "phantom": tier.backward_steps, "ift": tier.backward_steps + 1}.get(
        tier.backward, 0
    )


def planned_deq_units(tier: TierConfig, cap: int, samples: int, residual_samples: int, reference_cap: int) -> int:
    """Worst-case DEQ work of a round: training at `cap` plus the residual check.

    Unrolled backprop through `cap` iterations costs about 2 * cap cell evaluations.
    """
    per_sample = cap + (2 * cap if tier.backward == "unrolled" else backward_units(tier))
    return samples * per_sample + residual_samples * reference_cap


def cap_for_time_budget(
    tier: TierConfig,
    samples: int,
    residual_samples: int,
    reference_cap: int,
    bytes_down: int,
    bytes_up: int,
    max_cap: int = 64,
) -> int:
    """The largest forward cap K in 1..max_cap whose worst-case simulated time fits the
    tier's `time_budget`; 1 if even K = 1 does not fit (the device still takes part)."""
    assert tier.time_budget is not None
    best = 1
    for cap in range(1, max_cap + 1):
        units = planned_deq_units(tier, cap, samples, residual_samples, reference_cap)
        if device_seconds(tier, units, bytes_down, bytes_up) <= tier.time_budget:
            best = cap
        else:
            break
    return best
