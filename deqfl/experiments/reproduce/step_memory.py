"""Peak memory of one client training step, per model, measured in a fresh process.

The step is what a client repeats in local training: forward at batch `batch_size`
(the DEQ with its training solver and gradient mode), cross-entropy, backward, an SGD
step with momentum. Measured as the growth of the process's peak resident set (Linux
VmHWM, reset to the current RSS just before the step through /proc/self/clear_refs)
over the step: parameters, gradients and momentum buffers that exist before the step
are not counted; activations, saved tensors, solver state and allocator slack are. The
second step is measured (the first allocates torch's one-time kernel state), with glibc's
mmap threshold fixed at 64 KiB (`MALLOC_MMAP_THRESHOLD_`) so that freed tensors go back to
the system instead of staying resident and hiding the next step's growth.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any


_THRESHOLD = "MALLOC_MMAP_THRESHOLD_"


def step_peak_bytes(model: str, batch_size: int = 32, input_shape: tuple[int, int, int] = (1, 28, 28),
                    options: dict[str, Any] | None = None) -> int:
    """The peak-RSS growth (bytes) of one training step of `model` built with `options`
    (module docstring)."""
    context = multiprocessing.get_context("spawn")
    saved = os.environ.get(_THRESHOLD)
    os.environ[_THRESHOLD] = "65536"  # read by glibc when the child starts
    try:
        with context.Pool(1) as pool:
            return pool.apply(_measure, (model, batch_size, input_shape, options or {}))
    finally:
        if saved is None:
            del os.environ[_THRESHOLD]
        else:
            os.environ[_THRESHOLD] = saved


def _measure(model_name: str, batch_size: int, input_shape: tuple[int, int, int], options: dict[str, Any]) -> int:
    import torch  # noqa: PLC0415

    from deqfl.models.registry import build_model  # noqa: PLC0415

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = build_model(model_name, input_shape, **options).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch_size, *input_shape)
    y = torch.randint(0, 10, (batch_size,))
    before = 0
    for _ in range(2):
        before = _reset_peak()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        del loss
    return (_status_kib("VmHWM") - before) * 1024


def _reset_peak() -> int:
    """Reset VmHWM to the current RSS; return the current RSS (KiB)."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} (step memory needs Linux)")
