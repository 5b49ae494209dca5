"""What a worker process needs to rebuild the model: a small picklable spec, not a config.

Engines receive specs from the experiment runner and never import `deqfl.experiments`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from deqfl.devices import prepare_device
from deqfl.models import build_model


@dataclass(frozen=True)
class ModelSpec:
    """`build_model(name, input_shape, num_classes, **options)` after `torch.manual_seed(seed)`,
    on the CPU, then moved to `device` (a resolved name, e.g. "cuda:0"; the process is
    prepared for it by `deqfl.devices.prepare_device`): the same call as the run's own
    model, so a rebuilt model starts with the same values, its non-federated buffers
    included."""

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = "cpu"

    def build(self) -> nn.Module:
        device = prepare_device(self.device)
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):
            torch.manual_seed(self.seed)
            model = build_model(self.name, input_shape=self.input_shape, num_classes=self.num_classes, **self.options)
        return model.to(device)
