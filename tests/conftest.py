"""Shared test setup: offline, no telemetry, a fixed thread count, and the shared data."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The tests' models are small: one torch thread is faster than two, and far faster
    when the machine is shared. The previous thread count is restored after each test."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the repository (CI has it); skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def in_process_clients_by_default():
    """Runs in this process that leave `experiment.workers` unset train their clients
    in-process, as with one usable core: starting a worker pool costs seconds per run. The
    results are bitwise the same for any worker count (tests/engines/test_embedded_pool.py
    runs the pool; `deqfl` subprocesses keep the real default)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("deqfl.experiments.config.usable_cores", lambda: 1)
        yield
