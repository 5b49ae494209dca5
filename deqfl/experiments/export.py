"""Fixed-budget export: a run's model as a static network a device can run.

The DEQ is replaced by exactly K plain iterations of its cell,

    u = inject(x),  z_0 = initial_state(u),  z_{i+1} = f(z_i, u)  for i < K,

a static graph with no data-dependent stopping and no linear solves (Anderson's small
least-squares systems have no ONNX operator). The exported network therefore computes K steps of plain fixed-point
iteration, not Anderson's K steps: `deqfl export` reports the accuracy of both so the
difference is visible. Explicit models are exported unchanged.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import Tensor, nn

from deqfl.deq.module import DEQ
from deqfl.errors import ConfigError

FORMATS = ("torchscript", "onnx")


class FixedBudgetDEQ(nn.Module):
    """K plain iterations of a DEQ's cell (a static, weight-tied K-layer network)."""

    def __init__(self, deq: DEQ, budget: int) -> None:
        super().__init__()
        if budget < 1:
            raise ConfigError(f"--budget must be at least 1, got {budget}")
        self.deq = deq
        self.budget = budget

    def forward(self, x: Tensor) -> Tensor:
        u = self.deq.inject(x)
        z = self.deq.initial_state(u)
        for _ in range(self.budget):
            z = self.deq.cell(z, u)
        return z


def fixed_budget_model(model: nn.Module, budget: int) -> nn.Module:
    """A copy of `model` whose DEQ layers run exactly `budget` plain iterations; eval mode."""
    static = copy.deepcopy(model).eval()
    for parent in list(static.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, DEQ):
                setattr(parent, name, FixedBudgetDEQ(child, budget))
    return static


def export_model(model: nn.Module, example: Tensor, budget: int, fmt: str, path: Path) -> Path:
    """Write the fixed-budget model to `path` as TorchScript (traced) or ONNX (opset 18,
    dynamic batch size)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is unknown; valid choices: {', '.join(FORMATS)}")
    static = fixed_budget_model(model, budget)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        if fmt == "torchscript":
            traced = torch.jit.trace(static, example)
            traced.save(str(path))
        else:
            try:
                import onnxscript  # noqa: F401, PLC0415
            except ImportError:
                raise ConfigError(
                    "ONNX export needs the export extra: pip install 'deqfl[export]' "
                    "(onnx and onnxscript)"
                ) from None
            batch = torch.export.Dim("batch", min=1)
            program = torch.onnx.export(
                static, (example,), dynamo=True, dynamic_shapes=({0: batch},), opset_version=18
            )
            program.save(str(path))
    return path
