"""Optional experiment tracking: TensorBoard event files of every round metric.

With `experiment.tensorboard = true` a run writes `RUN_DIR/tensorboard/` (view it with
`tensorboard --logdir RUN_DIR/tensorboard`). Each round record (`deqfl.fl.record`) becomes
scalars at step = round: every number under its own key, every mapping of numbers under
`key/sub` (`tier_accuracy/weak`, `client_accuracy/p10`, `anytime/4`), every list as its
length (`clients`, `rejected`, `adjusted`, ...), booleans as 0/1; None is left out. A
resumed run purges the steps from its first new round on, so no round is shown twice.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deqfl.errors import ConfigError

TENSORBOARD_DIR = "tensorboard"


def require_tensorboard() -> None:
    """ConfigError unless the `tensorboard` package can be imported."""
    try:
        import tensorboard  # noqa: F401, PLC0415
    except ImportError:
        raise ConfigError(
            "experiment.tensorboard = true needs the tensorboard package: pip install 'deqfl[tracking]' "
            "(or set experiment.tensorboard = false)"
        ) from None


def round_scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """A round record's scalars (module docstring), keyed by tag."""
    scalars: dict[str, float] = {}
    for key, value in row.items():
        if key == "round" or value is None:
            continue
        if isinstance(value, (bool, numbers.Real)):
            scalars[key] = float(value)
        elif isinstance(value, Mapping):
            scalars.update({f"{key}/{sub}": float(v) for sub, v in value.items() if isinstance(v, numbers.Real)})
        elif isinstance(value, list):
            scalars[key] = float(len(value))
    return scalars


class TensorBoardLog:
    """A round callback writing each round's scalars to `log_dir`; `close()` at the end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._writer = None

    def __call__(self, row: Mapping[str, Any]) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 - optional package

            self._writer = SummaryWriter(str(self.log_dir), purge_step=int(row["round"]))
        for tag, value in round_scalars(row).items():
            self._writer.add_scalar(tag, value, int(row["round"]))
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
